# Face-swap workflow: a target video (or image) and a source face in, the swapped result out.
# See README.md for the configuration keys and the outputs.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "config/schemas/config.schema.yaml")


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/models.smk"
include: "rules/prepare.smk"
include: "rules/faces.smk"
include: "rules/swap.smk"
include: "rules/assemble.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
