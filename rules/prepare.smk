rule probe_target:
    input:
        target=opt("target"),
    output:
        "work/{name}/probe.json",
    log:
        "logs/{name}/probe_target.log",
    conda:
        "../envs/facepipe.yaml"
    script:
        "../scripts/probe_target.py"


# A checkpoint because the number of segments is known only once the video is prepared.
checkpoint prepare_target:
    input:
        target=opt("target"),
        probe="work/{name}/probe.json",
    output:
        segments=directory("work/{name}/segments"),
    log:
        "logs/{name}/prepare_target.log",
    benchmark:
        "benchmarks/{name}/prepare_target.tsv"
    conda:
        "../envs/facepipe.yaml"
    params:
        max_height=opt("max_height"),
        fps=opt("fps"),
        segment_seconds=opt("segment_seconds"),
    script:
        "../scripts/prepare_target.py"


rule extract_frames:
    input:
        segments="work/{name}/segments",
    output:
        frames=directory("work/{name}/frames/{segment}"),
    log:
        "logs/{name}/extract_frames/{segment}.log",
    benchmark:
        "benchmarks/{name}/extract_frames/{segment}.tsv"
    conda:
        "../envs/facepipe.yaml"
    params:
        segment_file=segment_file,
    script:
        "../scripts/extract_frames.py"
