from facepipe.models.face_mesh import convert
from facepipe.workflow.rule_script import run


def main(sm, log):
    # Inputs, outputs and keys are in the same order (rules/offline_models.smk).
    for key, source, out in zip(sm.params.models, sm.input, sm.output, strict=True):
        result = convert(source, out, tolerance=sm.params.tolerance)
        log.info("%s (%s): converted from %s; largest difference from LiteRT %.2e of the output range",
                 result["model"], key, result["source"], result["max_rel_diff_vs_litert"])


run(snakemake, main)
