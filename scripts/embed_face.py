from pathlib import Path

from facepipe.faces import roles
from facepipe.faces.embedding import embed_image
from facepipe.workflow.rule_script import run


def main(sm, log):
    embed_image(
        sm.input.image,
        sm.input.detector,
        sm.input.recognizer,
        sm.output.embedding,
        providers=sm.params.providers,
        face_index=sm.params.face_index,
        # Per code version: an embedding made by other code is never reused (facepipe.workflow.provenance).
        cache_dir=Path(sm.params.cache_dir) / sm.params.code,
        threads=sm.threads,
        backend=sm.params.backend,
        # A photo the swap takes a face from (not a reference photo, which only finds a person).
        swapper=sm.params.swapper if roles.is_swap_source(sm.wildcards.role) else None,
    )


run(snakemake, main)
