from facepipe.embedding import embed_image
from facepipe.scripting import run


def main(sm, log):
    embed_image(
        sm.input.image,
        sm.input.detector,
        sm.input.recognizer,
        sm.output.embedding,
        providers=sm.params.providers,
        face_index=sm.params.face_index,
        cache_dir=sm.params.cache_dir,
        threads=sm.threads,
        backend=sm.params.backend,
    )


run(snakemake, main)
