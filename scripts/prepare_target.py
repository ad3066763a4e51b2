from facepipe.media import atomic_output_dir, prepare_segments, read_json
from facepipe.scripting import run


def main(sm, log):
    with atomic_output_dir(sm.output.segments) as segments:
        manifest = prepare_segments(
            sm.input.target,
            read_json(sm.input.probe),
            segments,
            max_height=sm.params.max_height,
            fps=sm.params.fps,
            segment_seconds=sm.params.segment_seconds,
        )
    log.info("prepared: %s", manifest)


run(snakemake, main)
