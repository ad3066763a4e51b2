from pathlib import Path

from facepipe.media import list_frames, write_labelled_png
from facepipe.scripting import run


def main(sm, log):
    (frame,) = list_frames(sm.input.frames)
    write_labelled_png(frame, sm.output.image)
    log.info("wrote %s", Path(sm.output.image))


run(snakemake, main)
