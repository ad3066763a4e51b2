from pathlib import Path

from facepipe.workflow.rule_script import run
from facepipe.models.standin import build_standin


def main(sm, log):
    build_standin(sm.params.key, Path(sm.output[0]))
    log.warning("STAND-IN model %s written for %s: not a real model, not a real face swap",
                sm.output[0], sm.params.key)


run(snakemake, main)
