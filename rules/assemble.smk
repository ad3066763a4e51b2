rule encode_segment:
    input:
        frames=last_stage_frames,
        segments="work/{name}/segments",
    output:
        video="work/{name}/encoded/{segment}.mp4",
    log:
        "logs/{name}/encode_segment/{segment}.log",
    benchmark:
        "benchmarks/{name}/encode_segment/{segment}.tsv"
    conda:
        "../envs/facepipe.yaml"
    params:
        encoder=opt("encoder"),
        preset=opt("preset"),
        crf=opt("crf"),
    script:
        "../scripts/encode_segment.py"


rule mux_video:
    input:
        segments=encoded_segments,
        target=opt("target"),
        probe="work/{name}/probe.json",
    output:
        video=report(
            "results/{name}.mp4", caption="../report/result.rst", category="Results"
        ),
    log:
        "logs/{name}/mux_video.log",
    conda:
        "../envs/facepipe.yaml"
    script:
        "../scripts/mux_video.py"


rule finalize_image:
    input:
        frames=lambda wildcards: final_frames_dir(wildcards.name, "seg_0000"),
    output:
        image=report(
            "results/{name}.png", caption="../report/result.rst", category="Results"
        ),
    log:
        "logs/{name}/finalize_image.log",
    conda:
        "../envs/facepipe.yaml"
    script:
        "../scripts/finalize_image.py"
