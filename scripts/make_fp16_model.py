from facepipe.models.fp16 import convert_to_fp16
from facepipe.workflow.rule_script import run


def main(sm, log):
    convert_to_fp16(sm.input[0], sm.output[0])


run(snakemake, main)
