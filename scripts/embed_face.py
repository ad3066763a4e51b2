from pathlib import Path

from facepipe.faces.embedding import embed_image
from facepipe.workflow.rule_script import run


def swap_source(role):
    """Whether an embedding role is a photo the swap takes a face from: the source, or a map
    entry's source (mapN), not a reference photo (reference, maprefN)."""
    return role == "source" or (role.startswith("map") and not role.startswith("mapref"))


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
        swapper=sm.params.swapper if swap_source(sm.wildcards.role) else None,
    )


run(snakemake, main)
