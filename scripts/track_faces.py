from pathlib import Path

from facepipe.models.backends import METRICS
from facepipe.workflow.rule_script import run
from facepipe.faces.tracking import run_tracking
from facepipe.media.video import load_plan


def main(sm, log):
    manifest, _ = load_plan(sm.input.segments)
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
