from facepipe.models.batching import make_batched
from facepipe.workflow.rule_script import run


def main(sm, log):
    make_batched(sm.input[0], sm.output[0], precision=sm.params.precision)


run(snakemake, main)
