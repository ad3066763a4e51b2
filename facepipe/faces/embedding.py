"""The source (or reference) identity embedding, cached across jobs and runs.

The cache lives under the folder the embed_face rule gives, resources/embeddings/ and the
stage's code version (facepipe.workflow.provenance), keyed by the image's content hash and by the
detector and recognizer files' content: the same photo used by ten jobs is analysed once,
and a different model, or other code, never reuses an embedding it did not make.

With the offline backend the record also holds what its swappers need from the source: a
crop of the source image around the face (``source_crop``) and its landmarks in that crop
(``source_landmarks``: the face mesh's 468 points, facepipe.models.face_mesh). Its key names the
backend as well as the model files' hashes, so the caches of different backends never mix.

Both the cache entries and the job's own copy (work/NAME/source_embedding.npz) are sealed
(facepipe.media.integrity). The job's copy is an intermediate like any other: a damaged one is removed
and reported. A cache entry is only ever a shortcut: one that is damaged or unreadable is
recomputed with a warning naming it, never a failure; so is one without a seal.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np

from facepipe.faces.detection import pick_face
from facepipe.media.files import read_image
from facepipe.media.integrity import check_bytes, discard, place_sealed, read_verified, reject
from facepipe.models.alignment import alignment_matrix
from facepipe.models.backends import make_analyzer
from facepipe.models.download import sha256_file
from facepipe.models.registry import MODELS, swapper_for

log = logging.getLogger(__name__)


def cache_path(cache_dir: str | Path, image: str | Path, detector: str | Path, recognizer: str | Path,
               face_index: int, backend: str = "insightface") -> Path:
    rec = Path(recognizer)
    model_key = f"{backend}-{rec.stem}-{sha256_file(rec)[:12]}-det{sha256_file(detector)[:8]}"
    face = "largest" if face_index is None or face_index < 0 else f"face{face_index}"
    return Path(cache_dir) / model_key / f"{sha256_file(image)[:16]}-{face}.npz"


# What a record must hold to be used (embed_image writes box, kps and score too, and the
# offline backend its source crop, which its swapper checks itself).
RECORD_KEYS = ("embedding",)


def _save(path: Path, data: dict) -> None:
    """Write a record atomically, sealed. The temporary name is the process's own: two jobs
    with the same photo may fill the same cache entry at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, **data)
        place_sealed(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def parse_record(data: bytes) -> dict:
    """Every array of a record from the file's bytes, each read in full; ValueError unless it
    loads and holds a usable embedding."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            record = {k: npz[k] for k in npz.files}
    except Exception as exc:  # zipfile's bad CRC-32, a truncated archive, a bad .npy header, ...
        raise ValueError(f"it does not load ({type(exc).__name__}: {exc})") from None
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        raise ValueError(f"it lacks {', '.join(missing)}")
    emb = record["embedding"]
    if emb.ndim != 1 or emb.size == 0 or not np.issubdtype(emb.dtype, np.floating) or not np.isfinite(emb).all():
        raise ValueError(f"its embedding ({emb.dtype} {emb.shape}) is not a vector of finite numbers")
    return record


def read_cache(path: Path) -> dict | None:
    """A cache entry's record, or None when there is none or it cannot be trusted (then it is
    removed with a warning naming it, and the caller recomputes it)."""
    if not path.exists():
        return None
    try:
        data = path.read_bytes()
        problem = check_bytes(path, data)
    except OSError as exc:
        problem = f"it cannot be read ({exc.strerror or exc})"
    record = None
    if problem is None:
        try:
            record = parse_record(data)
        except ValueError as exc:
            problem = str(exc)
    if problem is not None:
        log.warning("embedding cache entry %s is damaged (%s): recomputing it", path, problem)
        try:
            discard(path)
        except OSError as exc:
            log.warning("could not remove the damaged cache entry %s: %s", path, exc)
        return None
    return record


# How large a source face is: the side, in photo pixels, of the square its swapper's aligned crop
# (facepipe.models.alignment: the five keypoints placed on the swapper's template) covers. A learned
# swapper needs its input size there, or the photo is enlarged to fill its input. The offline swaps
# paste the source's own pixels and have no template: for them the face is measured on
# insightface's 112 px recognition crop, and under MIN_PASTED_FACE px it is enlarged onto a
# typical target face and looks soft (a 112 px aligned crop, as insightface ships, is too small).
MIN_PASTED_FACE = 128
PASTED_TEMPLATE = "arcface_112_v2"
# A photo whose channels differ by at most this on nearly every pixel is a greyscale photo (a JPEG
# of a grey image decodes with channels a unit or two apart).
GREY_SPREAD, GREY_SHARE = 2, 0.995


def needed_face_size(backend: str, swapper: str = "") -> tuple[str, int, str]:
    """(the swapper a job runs, the face size in px it needs from a source photo, the template the
    face is measured on)."""

    spec = MODELS[swapper_for(backend, swapper)]
    if spec.size and spec.template:
        return spec.key, spec.size, spec.template
    return spec.key, MIN_PASTED_FACE, PASTED_TEMPLATE


def face_size(kps, template: str) -> float:
    """The side, in photo pixels, of the aligned crop of ``template`` around the keypoints."""

    matrix = alignment_matrix(kps, template, 1)  # photo -> a 1 px crop: its scale is 1 / the side
    return 1.0 / float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))


def source_warnings(image: str | Path, img: np.ndarray, kps, swapper: str, needed: int, template: str
                    ) -> list[str]:
    """One line per problem of a source photo the swap will still use: a face smaller than the
    swapper needs (face_size), a greyscale photo. img: the photo as decoded (BGR); kps: the face's
    five keypoints."""
    lines = []
    size = face_size(kps, template)
    if size < needed:
        lines.append(f"source photo {str(image)!r}: its face is {size:.0f} px (the side of its aligned {template} "
                     f"crop, in a {img.shape[1]}x{img.shape[0]} px photo), under the {needed} px {swapper} needs; "
                     f"the swapped face will be soft. Use a larger photo of the face")
    spread = img.max(axis=2).astype(np.int16) - img.min(axis=2)
    if (spread <= GREY_SPREAD).mean() >= GREY_SHARE:
        lines.append(f"source photo {str(image)!r} ({img.shape[1]}x{img.shape[0]} px) is greyscale: the swap takes "
                     f"the face's identity (and, offline, its skin) from it. Use a colour photo")
    return lines


def face_record(image: str | Path, detector: str | Path, recognizer: str | Path, *, providers: list[str],
                face_index: int = -1, cache_dir: str | Path = "resources/embeddings", threads: int = 0,
                backend: str = "insightface", img: np.ndarray | None = None, save: bool = True) -> dict:
    """The record of the chosen face of `image` (embedding, box, kps, score, the number of faces
    found, and offline the source crop), from the cache or analysed and cached (unless not `save`:
    a dry run writes nothing of the workflow's). FaceError when the
    photo has no face (or not the face asked for). The workflow calls this once while it plans
    (facepipe.workflow.preflight.check_face_photos), so the embed_face job reads the cache entry."""
    cached = cache_path(cache_dir, image, detector, recognizer, face_index, backend)
    data = read_cache(cached)
    if data is not None:
        log.info("embedding cache hit: %s (image %s)", cached, image)
        return data
    log.info("embedding cache miss: analysing %s", image)

    if img is None:
        img = read_image(image, "source")
    analyzer = make_analyzer(backend, detector, recognizer, providers, threads=threads)
    faces = analyzer.analyze(img)
    face = pick_face(faces, image, face_index)
    data = {"embedding": face["embedding"], "box": face["box"], "kps": face["kps"],
            "score": np.float32(face["score"]), "face_count": np.int32(len(faces))}
    if face.get("landmarks") is not None:
        # lazy: imported only on the path that needs it
        from facepipe.models.classic_swap import source_patch

        data["landmarks"] = face["landmarks"]
        data["source_crop"], data["source_landmarks"] = source_patch(img, face["landmarks"])
    if not save:
        return data
    try:
        _save(cached, data)
        log.info("embedding cached at %s", cached)
    except OSError as exc:  # a read-only or full cache costs the next job time, not this one's result
        log.warning("could not write the embedding cache entry %s: %s", cached, exc)
    return data


def embed_image(image: str | Path, detector: str | Path, recognizer: str | Path, out: str | Path, *,
                providers: list[str], face_index: int = -1, cache_dir: str | Path = "resources/embeddings",
                threads: int = 0, backend: str = "insightface", swapper: str | None = None) -> dict:
    """Write the embedding of the chosen face of `image` to `out`, from the cache when possible.
    swapper: for a photo the swap takes a face from, the job's ``swapper`` option (empty: the
    backend's own): a face too small for it, or a greyscale photo, is named in a warning."""
    img = read_image(image, "source")  # a clear error for a missing, empty or non-image file
    data = face_record(image, detector, recognizer, providers=providers, face_index=face_index,
                       cache_dir=cache_dir, threads=threads, backend=backend, img=img)
    if swapper is not None:
        for line in source_warnings(image, img, data["kps"], *needed_face_size(backend, swapper)):
            log.warning(line)
    _save(Path(out), data)
    return data


def load_source(path: str | Path) -> dict:
    """Every array of a job's embedding record (embedding, box, kps and, offline, the source
    crop), verified: a damaged record is removed and reported (DamagedIntermediateError)."""
    try:
        return parse_record(read_verified(path))
    except ValueError as exc:
        reject(path, str(exc))


def load_embedding(path: str | Path) -> np.ndarray:
    return load_source(path)["embedding"].astype(np.float32)
