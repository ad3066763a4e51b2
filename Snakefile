# Face-swap workflow: a target video (or image) and a source face in, the swapped result out.
# See README.md for the configuration keys and the outputs.
import gc
from pathlib import Path

from snakemake.utils import min_version, validate

# What Snakemake has loaded by now (its modules: pandas, SQLAlchemy, pydantic...) lives as long as
# its process. Frozen, those objects are no longer walked by every full garbage collection, nor
# by the last one at exit: on the 2-core machine a no-op call took 0.2 s less, a full run's start
# and end about 0.5 s less, in every snakemake call (a run, a dry run, a cluster job's).
gc.freeze()

from facepipe.workflow.jobs import JobError, check_config
from facepipe.workflow.preflight import stop_run
from facepipe.workflow.schema import schema_problem

min_version("9.0")


configfile: "config/config.yaml"


# Unknown keys (typos) are errors naming the nearest valid key; booleans read as users write them.
# A user's mistake is one line (stop_run), without Snakemake's location and banner.
CONFIG_SCHEMA = Path(workflow.basedir) / "config/schemas/config.schema.yaml"
try:
    check_config(config, CONFIG_SCHEMA)
except JobError as exc:
    stop_run(str(exc))
problem = schema_problem(config, CONFIG_SCHEMA, "configuration key")
if problem:
    stop_run(problem)
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
