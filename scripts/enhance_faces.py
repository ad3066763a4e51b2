from facepipe.swap.enhance import enhance_segment, pass_through_segment
from facepipe.models.zoo import load
from facepipe.progress import Progress, counted
from facepipe.workflow.rule_script import gpu_start, run
from facepipe.media.video import iter_frames, load_plan


def main(sm, log):
    degradation = gpu_start(sm)
    if degradation.no_enhancer:
        log.warning("enhancer %s skipped for this segment (degraded): the swapped faces pass through",
                    sm.params.enhancer)
        pass_through_segment(sm.input.patches, sm.output.patches)
        return
    log.info("enhancer %s", sm.params.enhancer)
    precision = "fp16" if degradation.fp16 else "fp32"
    enhancer = load(sm.params.enhancer, sm.input.enhancer, sm.params.providers, threads=sm.threads,
                    precision=precision, batch_size=degradation.batch_size(sm.params.batch_size),
                    blend=sm.params.enhancer_blend / 100)
    manifest, prepared = load_plan(sm.input.segments)  # the preview has a plan of its own
    segment = sm.wildcards.segment
    frames = iter_frames(sm.input.target, prepared, manifest, segment, threads=sm.threads)
    with Progress(manifest["segments"][segment], f"enhance_faces {segment}", log) as progress:
        enhance_segment(counted(frames, progress), sm.input.patches, enhancer, sm.output.patches)


run(snakemake, main)
