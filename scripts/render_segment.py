from facepipe.media.patches import FramePatches
from facepipe.media.passthrough import segment_writer
from facepipe.progress import Progress, counted
from facepipe.workflow.rule_script import run
from facepipe.media.video import iter_frames, load_plan, render_segment


def main(sm, log):
    manifest, prepared = load_plan(sm.input.segments)
    segment = sm.wildcards.segment
    patches = FramePatches(sm.input.patches)  # verified here, before the encoder starts
    writer, copied = segment_writer(sm.output.video, sm.input.target, prepared, manifest, segment, sm.input.patches,
                                    encoder=sm.params.encoder, preset=sm.params.preset, crf=sm.params.crf,
                                    threads=sm.params.encoder_threads, copy_unswapped=sm.params.copy_unswapped)
    # The groups of pictures the writer copies are not decoded.
    frames = iter_frames(sm.input.target, prepared, manifest, segment, threads=sm.threads,
                         skip=[(group.first, group.last) for group in copied])
    progress = Progress(manifest["segments"][segment], f"render_segment {segment}", log)
    frames = counted(frames, progress)
    with writer:
        patched = render_segment(frames, patches, writer, copied)
        progress.close()
        expected = manifest["segments"][segment]
        if writer.frames != expected:
            raise RuntimeError(f"{segment}: {writer.frames} frames rendered, the plan has {expected}")
    log.info("%s: %d frames encoded, %d with face patches", segment, writer.frames, patched)


run(snakemake, main)
