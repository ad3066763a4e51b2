from facepipe.media import extract_frames
from facepipe.scripting import run


def main(sm, log):
    n = extract_frames(sm.params.segment_file, sm.output.frames)
    log.info("%d frames extracted from %s", n, sm.params.segment_file)


run(snakemake, main)
