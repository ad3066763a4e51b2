from pathlib import Path

from facepipe.media.integrity import read_sealed_json
from facepipe.media.files import write_labelled_png
from facepipe.media.patches import read_patches
from facepipe.workflow.rule_script import run
from facepipe.media.video import iter_frames, render_image


def main(sm, log):
    manifest = read_sealed_json(Path(sm.input.segments) / "manifest.json", owner=sm.input.segments)
    (frame,) = iter_frames(sm.input.target, sm.input.segments, manifest, "seg_0000")
    write_labelled_png(render_image(frame, read_patches(sm.input.patches)), sm.output.image,
                       record=sm.params.get("record"))
    log.info("wrote %s", Path(sm.output.image))


run(snakemake, main)
