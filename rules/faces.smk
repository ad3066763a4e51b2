rule detect_faces:
    input:
        stamp=stamp("detect_faces"),
        target=opt("target"),
        segments="work/{name}/segments",
        detector=model_file("detector"),
        recognizer=model_file("recognizer"),
        photos=photos_first,
    output:
        faces="work/{name}/faces/{segment}.parquet",
        frames="work/{name}/faces/{segment}.frames.parquet",
    log:
        "logs/{name}/detect_faces/{segment}.log",
    benchmark:
        "benchmarks/{name}/detect_faces/{segment}.tsv"
    wildcard_constraints:
        segment=r"seg_\d{4}",
    retries: 3
    conda:
        "../envs/facepipe.yaml"
    threads: segment_threads
    resources:
        gpu=gpu_count,
        attempt=lambda wildcards, attempt: attempt,
    params:
        code=code_version("detect_faces"),
        degrade=config["degrade"],
        min_free_gpu_mb=config["min_free_gpu_mb"],
        providers=opt("providers"),
        backend=opt("backend"),
        crop=lambda wildcards: face_crop_kind(
            JOBS[wildcards.name]["swapper"], JOBS[wildcards.name]["pixel_boost"]
        ),
        # Crops are held over this many frames where a face is missed, for the tracker's gaps.
        track_gap=opt("track_gap"),
        identity_every=identity_every,
    script:
        "../scripts/detect_faces.py"


# Light, and reading only tables: on a cluster they run on the main host, not through the queue.
localrules:
    track_faces,
    cast_sheet,
    cast,


# Once per job, on the faces tables of all its segments (no video decode): tracks across
# segments, cut at shot changes, gaps filled, keypoints smoothed, tracks grouped into persons.
rule track_faces:
    input:
        stamp=stamp("track_faces"),
        segments="work/{name}/segments",
        faces=segment_files("work/{name}/faces/{segment}.parquet"),
        frames=segment_files("work/{name}/faces/{segment}.frames.parquet"),
    output:
        tracks="work/{name}/tracks.parquet",
        persons="work/{name}/persons.json",
    log:
        "logs/{name}/track_faces.log",
    benchmark:
        "benchmarks/{name}/track_faces.tsv"
    conda:
        "../envs/facepipe.yaml"
    threads: 1
    resources:
        mem_mb=4096,
    params:
        code=code_version("track_faces"),
        backend=opt("backend"),
        track_gap=opt("track_gap"),
        keypoint_smoothing=opt("keypoint_smoothing"),
        shot_threshold=opt("shot_threshold"),
    script:
        "../scripts/track_faces.py"


# The persons found (their cast ids are what `map` names), as a contact sheet and a table.
rule cast_sheet:
    input:
        stamp=stamp("cast_sheet"),
        persons="work/{name}/persons.json",
        faces=segment_files("work/{name}/faces/{segment}.parquet"),
    output:
        sheet=report(
            "results/{name}.cast.png", caption="../report/cast.rst", category="Cast"
        ),
        table="results/{name}.cast.tsv",
    log:
        "logs/{name}/cast_sheet.log",
    # After the segments' swap and render jobs whenever they wait for a core: nothing needs the cast.
    priority: -1
    conda:
        "../envs/facepipe.yaml"
    params:
        code=code_version("cast_sheet"),
    script:
        "../scripts/cast_sheet.py"


# The identity embedding of the source (or reference) face. The script keeps a cache under
# resources/embeddings/CODE (this rule's code version) keyed by the image's content hash and
# the models, shared by all jobs.
rule embed_face:
    input:
        stamp=stamp("embed_face"),
        image=embedding_image,
        detector=model_file("detector"),
        recognizer=model_file("recognizer"),
    output:
        embedding="work/{name}/{role}_embedding.npz",
    log:
        "logs/{name}/embed_face_{role}.log",
    conda:
        "../envs/facepipe.yaml"
    params:
        code=code_version("embed_face"),
        face_index=lambda wildcards: (
            JOBS[wildcards.name]["source_face"] if wildcards.role == "source" else -1
        ),
        providers=opt("providers"),
        backend=opt("backend"),
        swapper=opt("swapper"),
        cache_dir="resources/embeddings",
    script:
        "../scripts/embed_face.py"


# Only the cast sheets (detection and tracking, no swap): to choose map's ids before a full run.
rule cast:
    input:
        lambda wildcards: [f"results/{name}.cast.png" for name in JOBS],
