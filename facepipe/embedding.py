"""The source (or reference) identity embedding, cached across jobs and runs.

The cache lives under resources/embeddings/, keyed by the image's content hash and by the
detector and recognizer files' content: the same photo used by ten jobs is analysed once,
and a different model never reuses an embedding it did not make.

With the offline backend the record also holds what the classic swapper needs from the
source: a crop of the source image around the face (``source_crop``) and its 68 landmarks
in that crop (``source_landmarks``). Its key names the backend as well as the model files'
hashes, so offline and learned caches never mix.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from facepipe.download import sha256_file
from facepipe.faces import pick_face
from facepipe.media import read_image

log = logging.getLogger(__name__)


def cache_path(cache_dir: str | Path, image: str | Path, detector: str | Path, recognizer: str | Path,
               face_index: int, backend: str = "insightface") -> Path:
    rec = Path(recognizer)
    model_key = f"{rec.stem}-{sha256_file(rec)[:12]}-det{sha256_file(detector)[:8]}"
    if backend != "insightface":  # insightface keeps its original key, so existing caches stay valid
        model_key = f"{backend}-{model_key}"
    face = "largest" if face_index is None or face_index < 0 else f"face{face_index}"
    return Path(cache_dir) / model_key / f"{sha256_file(image)[:16]}-{face}.npz"


def _save(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **data)
    os.replace(tmp, path)


def embed_image(image: str | Path, detector: str | Path, recognizer: str | Path, out: str | Path, *,
                providers: list[str], face_index: int = -1, cache_dir: str | Path = "resources/embeddings",
                threads: int = 0, backend: str = "insightface") -> dict:
    """Write the embedding of the chosen face of `image` to `out`, from the cache when possible."""
    read_image(image, "source")  # a clear error for a missing, empty or non-image file
    cached = cache_path(cache_dir, image, detector, recognizer, face_index, backend)
    if cached.exists():
        log.info("embedding cache hit: %s (image %s)", cached, image)
        with np.load(cached) as npz:
            data = {k: npz[k] for k in npz.files}
    else:
        log.info("embedding cache miss: analysing %s", image)
        from facepipe.backends import make_analyzer

        analyzer = make_analyzer(backend, detector, recognizer, providers, threads=threads)
        img = read_image(image, "source")
        face = pick_face(analyzer.analyze(img), image, face_index)
        data = {"embedding": face["embedding"], "box": face["box"], "kps": face["kps"],
                "score": np.float32(face["score"])}
        if face.get("landmarks") is not None:
            from facepipe.classic_swap import source_patch

            data["landmarks"] = face["landmarks"]
            data["source_crop"], data["source_landmarks"] = source_patch(img, face["landmarks"])
        _save(cached, data)
        log.info("embedding cached at %s", cached)
    _save(Path(out), data)
    return data


def load_source(path: str | Path) -> dict:
    """Every array of an embedding record (embedding, box, kps and, offline, the source crop)."""
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def load_embedding(path: str | Path) -> np.ndarray:
    with np.load(path) as npz:
        return npz["embedding"].astype(np.float32)
