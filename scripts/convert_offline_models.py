from facepipe.models.registry import converter
from facepipe.workflow.rule_script import run


def main(sm, log):
    # Inputs, conversions and keys are in the same order (rules/offline_models.smk); the outputs are
    # the conversions and the sources' sealed copies the converters place beside them.
    for key, source, out in zip(sm.params.models, sm.input, sm.params.conversions, strict=True):
        result = converter(key)(source, out)
        log.info("%s (%s): converted from %s and checked: %s", out, key, source,
                 ", ".join(f"{name} {value:.2e}" for name, value in result.items() if isinstance(value, float)))


run(snakemake, main)
