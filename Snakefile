# Face-swap workflow: a target video (or image) and a source face in, the swapped result out.
# See README.md for the configuration keys and the outputs.
from pathlib import Path

from snakemake.utils import min_version, validate

from facepipe.jobs import JobError, check_config

min_version("9.0")


configfile: "config/config.yaml"


# Unknown keys (typos) are errors naming the nearest valid key; booleans read as users write them.
try:
    check_config(config, Path(workflow.basedir) / "config/schemas/config.schema.yaml")
except JobError as exc:
    raise WorkflowError(str(exc))
validate(config, "config/schemas/config.schema.yaml")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/models.smk"
include: "rules/offline_models.smk"
include: "rules/prepare.smk"
include: "rules/faces.smk"
include: "rules/swap.smk"
include: "rules/assemble.smk"
include: "rules/preview.smk"
include: "rules/qc.smk"


rule all:
    default_target: True
    input:
        final_outputs,
