from facepipe.report.preview import render_preview
from facepipe.workflow.rule_script import run


def main(sm, log):
    render_preview(sm.input.target, sm.input.plan, sm.input.patches, sm.input.tracks, sm.output.sheet)


run(snakemake, main)
