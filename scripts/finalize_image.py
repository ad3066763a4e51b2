from pathlib import Path

from facepipe.media.files import write_labelled_png
from facepipe.media.patches import read_patches
from facepipe.workflow.rule_script import run
from facepipe.media.video import iter_frames, load_plan, render_image


def main(sm, log):
    manifest, prepared = load_plan(sm.input.segments)
    (frame,) = iter_frames(sm.input.target, prepared, manifest, "seg_0000")
    write_labelled_png(render_image(frame, read_patches(sm.input.patches)), sm.output.image,
                       record=sm.params.get("record"))
    log.info("wrote %s", Path(sm.output.image))


run(snakemake, main)
