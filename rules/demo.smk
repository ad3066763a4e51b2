rule make_demo_inputs:
    output:
        target="resources/demo/target.mp4",
        source="resources/demo/source.png",
    log:
        "logs/demo/make_demo_inputs.log",
    conda:
        "../envs/facepipe.yaml"
    params:
        code=code_version("make_demo_inputs"),
        seconds=4,
        fps=25,
    script:
        "../scripts/make_demo_inputs.py"
