from facepipe.media import atomic_output_dir, read_json
from facepipe.scripting import run
from facepipe.video import plan_segments


def main(sm, log):
    with atomic_output_dir(sm.output.segments) as segments:
        manifest = plan_segments(
            sm.input.target,
            read_json(sm.input.probe),
            segments,
            max_height=sm.params.max_height,
            fps=sm.params.fps,
            segment_seconds=sm.params.segment_seconds,
        )
    log.info("planned %d frames in %d segments%s", manifest["frames"], len(manifest["segments"]),
             f" (transcoded: {manifest['transcoded_because']})" if manifest.get("transcoded_because") else "")


run(snakemake, main)
