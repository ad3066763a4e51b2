# Quality control of finished jobs, for Snakemake's HTML report (facepipe.report.qc):
#   snakemake --cores all qc && snakemake --report report.html qc
# Not part of the default target: it decodes the result and the target again and runs the
# recognizer on the swapped faces, after the result is made. The target holds every job's
# result, cast, preview and QC figures, so a report of it shows them all.
rule qc:
    input:
        lambda wildcards: [
            path
            for name in JOBS
            for path in (
                f"results/qc/{name}/timeline.png",
                f"results/{name}.cast.png",
                f"results/{name}.preview.png",
            )
        ],


rule qc_report:
    input:
        unpack(swap_embeddings),
        stamp=stamp("qc_report"),
        result=lambda wildcards: result_path(wildcards.name),
        target=opt("target"),
        segments="work/{name}/segments",
        faces=segment_files("work/{name}/faces/{segment}.parquet"),
        swapped=segment_files("work/{name}/swapped/{segment}.parquet"),
        tracks="work/{name}/tracks.parquet",
        persons="work/{name}/persons.json",
        detector=model_file("detector"),
        recognizer=model_file("recognizer"),
    output:
        sheet=report(
            "results/qc/{name}/before_after.png",
            caption="../report/qc_sheet.rst",
            category="Quality control",
            subcategory="{name}",
        ),
        timeline=report(
            "results/qc/{name}/timeline.png",
            caption="../report/qc_timeline.rst",
            category="Quality control",
            subcategory="{name}",
        ),
        similarity=report(
            "results/qc/{name}/similarity.png",
            caption="../report/qc_similarity.rst",
            category="Quality control",
            subcategory="{name}",
        ),
        identity_table="results/qc/{name}/identity.tsv",
        timings=report(
            "results/qc/{name}/timings.png",
            caption="../report/qc_timings.rst",
            category="Quality control",
            subcategory="{name}",
        ),
        providers=report(
            "results/qc/{name}/providers.png",
            caption="../report/qc_providers.rst",
            category="Quality control",
            subcategory="{name}",
        ),
    log:
        "logs/{name}/qc_report.log",
    benchmark:
        "benchmarks/{name}/qc_report.tsv"
    conda:
        "../envs/facepipe.yaml"
    threads: 1
    resources:
        mem_mb=4096,
    params:
        code=code_version("qc_report"),
        backend=opt("backend"),
        providers=opt("providers"),
    script:
        "../scripts/qc_report.py"
