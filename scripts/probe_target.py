from dataclasses import asdict

from facepipe.media.integrity import write_sealed_json
from facepipe.media.ffmpeg import probe
from facepipe.workflow.rule_script import run


def main(sm, log):
    info = probe(sm.input.target)
    log.info("probe: %s", info)
    # Sealed: the stages that read the probe verify it first (facepipe.media.integrity).
    write_sealed_json(sm.output[0], asdict(info))


run(snakemake, main)
