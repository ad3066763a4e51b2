# Decode, paste the face patches, encode: one pass per segment, no frame files.
rule render_segment:
    input:
        stamp=stamp("render_segment"),
        target=opt("target"),
        segments="work/{name}/segments",
        patches=final_patches,
    output:
        video=intermediate("work/{name}/encoded/{segment}.mp4"),
    log:
        "logs/{name}/render_segment/{segment}.log",
    benchmark:
        "benchmarks/{name}/render_segment/{segment}.tsv"
    wildcard_constraints:
        segment=r"seg_\d{4}",
    conda:
        "../envs/facepipe.yaml"
    threads: render_threads
    params:
        code=code_version("render_segment"),
        encoder=opt("encoder"),
        preset=opt("preset"),
        crf=opt("crf"),
        encoder_threads=render_threads,
        copy_unswapped=opt("copy_unswapped"),
    script:
        "../scripts/render_segment.py"


rule mux_video:
    input:
        stamp=stamp("mux_video"),
        segments=encoded_segments,
        target=opt("target"),
        probe="work/{name}/probe.json",
        plan="work/{name}/segments",
    output:
        video=report(
            "results/{name}.mp4", caption="../report/result.rst", category="Results"
        ),
    log:
        "logs/{name}/mux_video.log",
    conda:
        "../envs/facepipe.yaml"
    params:
        code=code_version("mux_video"),
        keep_intermediates=config["keep_intermediates"],
        record=record_text,
    script:
        "../scripts/mux_video.py"


rule finalize_image:
    input:
        stamp=stamp("finalize_image"),
        target=opt("target"),
        segments="work/{name}/segments",
        patches=lambda wildcards: final_patches_file(wildcards.name, "seg_0000"),
    output:
        image=report(
            "results/{name}.png", caption="../report/result.rst", category="Results"
        ),
    log:
        "logs/{name}/finalize_image.log",
    conda:
        "../envs/facepipe.yaml"
    params:
        code=code_version("finalize_image"),
        record=record_text,
    script:
        "../scripts/finalize_image.py"
