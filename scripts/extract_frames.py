from facepipe.media import atomic_output_dir, extract_frames
from facepipe.scripting import run


def main(sm, log):
    with atomic_output_dir(sm.output.frames) as frames:
        n = extract_frames(sm.params.segment_file, frames)
    log.info("%d frames extracted from %s", n, sm.params.segment_file)


run(snakemake, main)
