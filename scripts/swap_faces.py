from facepipe.faces import roles
from facepipe.workflow.rule_script import gpu_start, run
from facepipe.swap.segment import Compute, MaskOptions, Selection, SwapModel, swap_job_segment


def main(sm, log):
    degradation = gpu_start(sm)
    embeddings = {
        role: getattr(sm.input, role)
        for role in sm.input.keys()
        if roles.is_role(role)
    }
    swap_job_segment(
        sm.input.faces,
        sm.input.tracks,
        sm.input.persons,
        sm.wildcards.segment,
        sm.output.patches,
        plan=sm.input.segments,
        embeddings=embeddings,
        model=SwapModel(
            backend=sm.params.backend,
            swapper=sm.params.swapper,
            model=sm.input.get("swapper"),
            pixel_boost=sm.params.pixel_boost,
            shape_transfer=sm.params.shape_transfer,
        ),
        compute=Compute(
            providers=sm.params.providers,
            precision="fp16" if degradation.fp16 else sm.params.precision,
            threads=sm.threads,
            batch_size=degradation.batch_size(sm.params.batch_size),
        ),
        selection=Selection(
            mode=sm.params.faces,
            map_option=sm.params.map,
            threshold=sm.params.reference_threshold,
        ),
        masks=MaskOptions(
            face_mask=tuple(sm.params.face_mask or ()),
            blur=sm.params.mask_blur,
            padding=tuple(sm.params.mask_padding),
            regions=tuple(sm.params.mask_regions or ()),
            occluder=sm.input.get("occluder") or None,
            parser=sm.input.get("parser") or None,
        ),
    )


run(snakemake, main)
