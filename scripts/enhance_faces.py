from facepipe.enhance import GFPGAN, enhance_segment
from facepipe.scripting import run


def main(sm, log):
    log.info("enhancer %s", sm.params.enhancer)
    enhancer = GFPGAN(sm.input.enhancer, sm.params.providers, threads=sm.threads)
    enhance_segment(sm.input.frames, enhancer, sm.output.frames)


run(snakemake, main)
