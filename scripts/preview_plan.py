from pathlib import Path

from facepipe.report.preview import plan_preview
from facepipe.workflow.rule_script import run
from facepipe.media.video import load_plan


def main(sm, log):
    manifest, prepared = load_plan(sm.input.segments)
    plan_preview(
        manifest,
        prepared,
        Path(sm.input.faces[0]).parent,
        sm.input.tracks,
        sm.input.persons,
        sm.output.plan,
        sm.output.faces,
        sm.output.tracks,
    )


run(snakemake, main)
