from pathlib import Path

from facepipe.media import read_json
from facepipe.patches import FramePatches
from facepipe.scripting import run
from facepipe.video import SegmentWriter, iter_frames, render_segment


def main(sm, log):
    manifest = read_json(Path(sm.input.segments) / "manifest.json")
    segment = sm.wildcards.segment
    frames = iter_frames(sm.input.target, sm.input.segments, manifest, segment, threads=sm.threads)
    with SegmentWriter(sm.output.video, width=manifest["width"], height=manifest["height"], fps=manifest["fps"],
                       encoder=sm.params.encoder, preset=sm.params.preset, crf=sm.params.crf,
                       threads=sm.threads) as writer:
        patched = render_segment(frames, FramePatches(sm.input.patches), writer)
        expected = manifest["segments"][segment]
        if writer.frames != expected:
            raise RuntimeError(f"{segment}: {writer.frames} frames rendered, the plan has {expected}")
    log.info("%s: %d frames encoded, %d with face patches", segment, writer.frames, patched)


run(snakemake, main)
