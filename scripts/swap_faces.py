from facepipe.backends import METRICS, make_swapper
from facepipe.embedding import load_embedding, load_source
from facepipe.scripting import gpu_start, run
from facepipe.swap import swap_segment


def main(sm, log):
    degradation = gpu_start(sm)
    precision = "fp16" if degradation.fp16 else sm.params.precision
    source = load_source(sm.input.source)
    swapper = make_swapper(
        sm.params.backend,
        sm.input.get("swapper"),
        source,
        sm.params.providers,
        precision=precision,
        threads=sm.threads,
        source_file=sm.input.source,
        batch_size=degradation.batch_size(sm.params.batch_size),
    )
    reference = load_embedding(sm.input.reference) if "reference" in sm.input.keys() else None
    swap_segment(
        sm.input.faces,
        source["embedding"],
        swapper,
        sm.output.patches,
        mode=sm.params.faces,
        reference=reference,
        threshold=sm.params.reference_threshold,
        metric=METRICS[sm.params.backend],
    )


run(snakemake, main)
