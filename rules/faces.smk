rule detect_faces:
    input:
        stamp=stamp("detect_faces"),
        target=opt("target"),
        segments="work/{name}/segments",
        detector=model_file("detector"),
        recognizer=model_file("recognizer"),
    output:
        faces="work/{name}/faces/{segment}.parquet",
    log:
        "logs/{name}/detect_faces/{segment}.log",
    benchmark:
        "benchmarks/{name}/detect_faces/{segment}.tsv"
    retries: 3
    conda:
        "../envs/facepipe.yaml"
    threads: 1
    resources:
        gpu=gpu_count,
        attempt=lambda wildcards, attempt: attempt,
    params:
        degrade=config["degrade"],
        min_free_gpu_mb=config["min_free_gpu_mb"],
        providers=opt("providers"),
        backend=opt("backend"),
        embed=lambda wildcards: embeds_target_faces(
            JOBS[wildcards.name]["backend"], JOBS[wildcards.name]["faces"]
        ),
        crop=lambda wildcards: face_crop_kind(JOBS[wildcards.name]["backend"]),
    script:
        "../scripts/detect_faces.py"


# The identity embedding of the source (or reference) face. The script keeps a cache under
# resources/embeddings keyed by the image's content hash and the models, shared by all jobs.
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
        face_index=lambda wildcards: (
            JOBS[wildcards.name]["source_face"] if wildcards.role == "source" else -1
        ),
        providers=opt("providers"),
        backend=opt("backend"),
        cache_dir="resources/embeddings",
    script:
        "../scripts/embed_face.py"
