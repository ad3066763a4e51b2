from pathlib import Path

from facepipe.enhance import GFPGAN, enhance_segment, pass_through_segment
from facepipe.integrity import read_sealed_json
from facepipe.progress import Progress, counted
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
    segment = sm.wildcards.segment
    frames = iter_frames(sm.input.target, sm.input.segments, manifest, segment, threads=sm.threads)
    with Progress(manifest["segments"][segment], f"enhance_faces {segment}", log) as progress:
        enhance_segment(counted(frames, progress), sm.input.patches, enhancer, sm.output.patches)


run(snakemake, main)
