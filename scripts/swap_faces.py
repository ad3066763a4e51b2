from facepipe.faces import roles
from facepipe.workflow.rule_script import gpu_start, run
from facepipe.swap.segment import swap_job_segment


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
        embeddings=embeddings,
        backend=sm.params.backend,
        swapper=sm.params.swapper,
        pixel_boost=sm.params.pixel_boost,
        shape_transfer=sm.params.shape_transfer,
        face_mask=sm.params.face_mask,
        mask_blur=sm.params.mask_blur,
        mask_padding=sm.params.mask_padding,
        mask_regions=sm.params.mask_regions,
        occluder=sm.input.get("occluder") or None,
        parser=sm.input.get("parser") or None,
        model=sm.input.get("swapper"),
        providers=sm.params.providers,
        precision="fp16" if degradation.fp16 else sm.params.precision,
        threads=sm.threads,
        batch_size=degradation.batch_size(sm.params.batch_size),
        mode=sm.params.faces,
        map_option=sm.params.map,
        threshold=sm.params.reference_threshold,
    )


run(snakemake, main)
