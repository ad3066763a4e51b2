from pathlib import Path

from facepipe.enhance import GFPGAN, enhance_segment, pass_through_segment
from facepipe.integrity import read_sealed_json
from facepipe.scripting import gpu_start, run
from facepipe.video import iter_frames


def main(sm, log):
    degradation = gpu_start(sm)
    if degradation.no_enhancer:
        log.warning("enhancer %s skipped for this segment (degraded): the swapped faces pass through",
                    sm.params.enhancer)
        pass_through_segment(sm.input.patches, sm.output.patches)
        return
    log.info("enhancer %s", sm.params.enhancer)
    precision = "fp16" if degradation.fp16 else "fp32"
    enhancer = GFPGAN(sm.input.enhancer, sm.params.providers, threads=sm.threads, precision=precision,
                      batch_size=degradation.batch_size(sm.params.batch_size))
    manifest = read_sealed_json(Path(sm.input.segments) / "manifest.json", owner=sm.input.segments)
    frames = iter_frames(sm.input.target, sm.input.segments, manifest, sm.wildcards.segment, threads=sm.threads)
    enhance_segment(frames, sm.input.patches, enhancer, sm.output.patches)


run(snakemake, main)
