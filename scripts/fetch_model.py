from pathlib import Path

from facepipe.models.download import ModelUnavailableError, fetch, fetch_all_missing_message
from facepipe.models import MODELS
from facepipe.workflow.rule_script import run


def main(sm, log):
    spec = MODELS[sm.params.key]
    log.info("model %s (%s), licence: %s", spec.key, spec.role, spec.licence)
    try:
        fetch(spec, Path(sm.output[0]), log=log)
    except ModelUnavailableError as exc:
        # Offline: name every learned model still missing, so one read fixes them all.
        others = [s for s in MODELS.values() if s.pinned and s.key != spec.key]
        missing = fetch_all_missing_message(others, Path(sm.output[0]).parent)
        raise ModelUnavailableError(f"{exc}\n{missing}" if missing else str(exc)) from None


run(snakemake, main)
