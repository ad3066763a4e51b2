# A few frames of each job through the same stages as the full run (facepipe.report.preview): the
# detection and tracking of the whole video (as for the cast), then the swap and enhancement of
# the preview's frames only, as one more segment named "preview".
rule preview:
    input:
        lambda wildcards: [f"results/{name}.preview.png" for name in JOBS],


# Tables only: the preview's frames, cut from the job's faces and tracks.
rule preview_plan:
    input:
        stamp=stamp("preview_plan"),
        segments="work/{name}/segments",
        faces=segment_files("work/{name}/faces/{segment}.parquet"),
        tracks="work/{name}/tracks.parquet",
        persons="work/{name}/persons.json",
    output:
        plan="work/{name}/preview/manifest.json",
        faces="work/{name}/faces/preview.parquet",
        tracks="work/{name}/preview/tracks.parquet",
    log:
        "logs/{name}/preview_plan.log",
    conda:
        "../envs/facepipe.yaml"
    params:
        code=code_version("preview_plan"),
    script:
        "../scripts/preview_plan.py"


rule preview_sheet:
    input:
        stamp=stamp("preview_sheet"),
        target=opt("target"),
        plan="work/{name}/preview/manifest.json",
        patches=lambda wildcards: final_patches_file(wildcards.name, "preview"),
        tracks="work/{name}/preview/tracks.parquet",
    output:
        sheet=report(
            "results/{name}.preview.png",
            caption="../report/preview.rst",
            category="Preview",
        ),
    log:
        "logs/{name}/preview_sheet.log",
    conda:
        "../envs/facepipe.yaml"
    params:
        code=code_version("preview_sheet"),
    script:
        "../scripts/preview_sheet.py"


localrules:
    preview_plan,
    preview_sheet,
    preview,
