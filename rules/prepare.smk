# Stands in for a stage's stamp that is not on disk while Snakemake builds a graph it does not
# run (--report, --dag, and a dry run, which writes nothing). A run writes each job's stamps before
# its graph needs them (plan_job in rules/common.smk), so this rule never runs; a stamp it stands
# in for only ever keeps a result, as the run's stamp dated in the past would. It produces only
# the stamps missing when the workflow is read (missing_stamps), so Snakemake never lists it
# beside the stamps that are there.
localrules:
    stamp,


rule stamp:
    output:
        "work/{stamp_file}",
    log:
        "logs/stamp/{stamp_file}.log",
    wildcard_constraints:
        stamp_file=missing_stamps(),
    run:
        raise WorkflowError(
            f"stamp {output[0]} is missing while the run is under way: it is written when the "
            "run plans its jobs (rules/common.smk: plan_job); run the workflow again"
        )


# A checkpoint because the number of segments is known only once the target is read. It
# measures the target (probe.json: frames, rate, audio, for the mux too) and writes a plan
# (frame ranges and seek points), not frames: every later stage decodes its segment from the
# target itself. Only a target that cannot be decoded from a seek point is transcoded (once)
# into the plan's folder. One job, not a probe job and then a planning job: each job's process
# start is on the path of every run, and measuring again when the plan's settings change
# costs what reading the packets costs (the plan reads them too).
checkpoint prepare_target:
    input:
        stamp=stamp("prepare_target"),
        # Makes the plan again when it is gone and the result must be remade (see common.smk).
        remake=remake_token,
        target=opt("target"),
    output:
        probe="work/{name}/probe.json",
        segments=directory("work/{name}/segments"),
    log:
        "logs/{name}/prepare_target.log",
    benchmark:
        "benchmarks/{name}/prepare_target.tsv"
    conda:
        "../envs/facepipe.yaml"
    threads: plan_cores
    params:
        code=code_version("prepare_target"),
        max_height=opt("max_height"),
        fps=opt("fps"),
        segment_seconds=opt("segment_seconds"),
    script:
        "../scripts/prepare_target.py"
