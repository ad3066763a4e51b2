from facepipe.enhance import GFPGAN, enhance_segment, pass_through_segment
from facepipe.media import atomic_output_dir
from facepipe.scripting import gpu_start, run


def main(sm, log):
    degradation = gpu_start(sm)
    if degradation.no_enhancer:
        log.warning("enhancer %s skipped for this segment (degraded): frames pass through", sm.params.enhancer)
        with atomic_output_dir(sm.output.frames) as frames:
            pass_through_segment(sm.input.frames, frames)
        return
    log.info("enhancer %s", sm.params.enhancer)
    precision = "fp16" if degradation.fp16 else "fp32"
    enhancer = GFPGAN(sm.input.enhancer, sm.params.providers, threads=sm.threads, precision=precision)
    with atomic_output_dir(sm.output.frames) as frames:
        enhance_segment(sm.input.frames, enhancer, frames)


run(snakemake, main)
