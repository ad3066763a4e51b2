# Works on the face crops detection kept, re-aligned to the tracks: decodes no video. Which
# persons are swapped with which source (faces, map) is decided here, for the whole job.
rule swap_faces:
    input:
        unpack(swap_embeddings),
        stamp=stamp("swap_faces"),
        # The frames' size: a face partly out of the frame has landmarks past its edge.
        segments=segment_plan,
        faces="work/{name}/faces/{segment}.parquet",
        tracks=tracks_table,
        persons="work/{name}/persons.json",
        swapper=batched_model_file("swapper"),
        # The mask models, only for the face_mask types that need them (facepipe.swap.masks).
        occluder=model_file("occluder"),
        parser=model_file("parser"),
    output:
        patches="work/{name}/swapped/{segment}.parquet",
    log:
        "logs/{name}/swap_faces/{segment}.log",
    benchmark:
        "benchmarks/{name}/swap_faces/{segment}.tsv"
    retries: 3
    conda:
        "../envs/facepipe.yaml"
    threads: swap_threads
    resources:
        gpu=gpu_count,
        attempt=lambda wildcards, attempt: attempt,
    params:
        code=code_version("swap_faces"),
        degrade=config["degrade"],
        min_free_gpu_mb=config["min_free_gpu_mb"],
        faces=opt("faces"),
        map=opt("map"),
        reference_threshold=opt("reference_threshold"),
        providers=opt("providers"),
        precision=opt("precision"),
        backend=opt("backend"),
        swapper=opt("swapper"),
        pixel_boost=opt("pixel_boost"),
        shape_transfer=opt("shape_transfer"),
        face_mask=opt("face_mask"),
        mask_blur=opt("mask_blur"),
        mask_padding=opt("mask_padding"),
        mask_regions=opt("mask_regions"),
        batch_size=opt("batch_size"),
    script:
        "../scripts/swap_faces.py"


# In the DAG only when an enhancer is chosen, so its model is fetched and loaded only then.
# Swap and enhance hand on face patches, not frames (facepipe.media.patches).
rule enhance_faces:
    input:
        stamp=stamp("enhance_faces"),
        target=opt("target"),
        segments=segment_plan,
        patches="work/{name}/swapped/{segment}.parquet",
        enhancer=batched_model_file("enhancer"),
    output:
        patches="work/{name}/enhanced/{segment}.parquet",
    log:
        "logs/{name}/enhance_faces/{segment}.log",
    benchmark:
        "benchmarks/{name}/enhance_faces/{segment}.tsv"
    retries: 3
    conda:
        "../envs/facepipe.yaml"
    threads: 1
    resources:
        gpu=gpu_count,
        attempt=lambda wildcards, attempt: attempt,
    params:
        code=code_version("enhance_faces"),
        degrade=config["degrade"],
        min_free_gpu_mb=config["min_free_gpu_mb"],
        enhancer=opt("enhancer"),
        enhancer_blend=opt("enhancer_blend"),
        providers=opt("providers"),
        batch_size=opt("batch_size"),
    script:
        "../scripts/enhance_faces.py"
