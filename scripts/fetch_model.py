from pathlib import Path

from facepipe.download import fetch
from facepipe.models import MODELS
from facepipe.scripting import run


def main(sm, log):
    spec = MODELS[sm.params.key]
    log.info("model %s (%s), licence: %s", spec.key, spec.role, spec.licence)
    fetch(spec, Path(sm.output[0]), log=log)


run(snakemake, main)
