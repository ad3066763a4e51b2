from pathlib import Path

from facepipe.models.backends import METRICS
from facepipe.media.integrity import read_sealed_json
from facepipe.workflow.rule_script import run
from facepipe.faces.tracking import run_tracking


def main(sm, log):
    manifest = read_sealed_json(Path(sm.input.segments) / "manifest.json", owner=sm.input.segments)
    run_tracking(
        manifest,
        Path(sm.input.faces[0]).parent,
        sm.output.tracks,
        sm.output.persons,
        track_gap=sm.params.track_gap,
        smoothing=sm.params.keypoint_smoothing,
        shot_threshold=sm.params.shot_threshold,
        metric=METRICS[sm.params.backend],
    )


run(snakemake, main)
