from facepipe.media import probe
from facepipe.scripting import run


def main(sm, log):
    info = probe(sm.input.target)
    log.info("probe: %s", info)
    info.to_json(sm.output[0])


run(snakemake, main)
