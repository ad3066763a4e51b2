from pathlib import Path

from facepipe.media.files import write_labelled_png
from facepipe.media.patches import read_patches
from facepipe.workflow.rule_script import run
from facepipe.media.video import iter_frames, load_alpha, load_plan, render_image


def main(sm, log):
    manifest, prepared = load_plan(sm.input.segments)
    (frame,) = iter_frames(sm.input.target, prepared, manifest, "seg_0000")
    result = render_image(frame, read_patches(sm.input.patches))
    alpha = load_alpha(sm.input.target, (result.shape[1], result.shape[0]))
    write_labelled_png(result, sm.output.image, record=sm.params.get("record"), alpha=alpha)
    log.info("wrote %s%s", Path(sm.output.image), "" if alpha is None else " (with the target's transparency)")


run(snakemake, main)
