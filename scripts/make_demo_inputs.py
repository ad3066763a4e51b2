from facepipe.media.demo import make_demo_inputs
from facepipe.workflow.rule_script import run


def main(sm, log):
    make_demo_inputs(sm.output.target, sm.output.source, seconds=sm.params.seconds, fps=sm.params.fps)
    log.info("demo target %s and source %s written", sm.output.target, sm.output.source)


run(snakemake, main)
