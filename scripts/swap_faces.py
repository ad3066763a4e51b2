from facepipe.embedding import load_embedding
from facepipe.scripting import gpu_start, run
from facepipe.swap import Swapper, swap_segment


def main(sm, log):
    degradation = gpu_start(sm)
    precision = "fp16" if degradation.fp16 else sm.params.precision
    swapper = Swapper(sm.input.swapper, sm.params.providers, precision=precision, threads=sm.threads)
    reference = load_embedding(sm.input.reference) if "reference" in sm.input.keys() else None
    swap_segment(
        sm.input.frames,
        sm.input.faces,
        load_embedding(sm.input.source),
        swapper,
        sm.output.frames,
        mode=sm.params.faces,
        reference=reference,
        threshold=sm.params.reference_threshold,
    )


run(snakemake, main)
