from pathlib import Path

from facepipe.media import encode_segment, read_json
from facepipe.scripting import run


def main(sm, log):
    fps = read_json(Path(sm.input.segments) / "manifest.json")["fps"]
    encode_segment(sm.input.frames, sm.output.video, fps=fps, encoder=sm.params.encoder,
                   preset=sm.params.preset, crf=sm.params.crf)


run(snakemake, main)
