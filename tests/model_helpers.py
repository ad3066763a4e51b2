"""Test helpers for the face models: load a swapper or restorer by registry key, swap single
crops, and insightface's own paste-back for comparisons."""

from __future__ import annotations

import numpy as np

from facepipe.models.zoo import load
from facepipe.media.patches import paste_eroded_crop

INSWAPPER_CROP = "aligned:arcface_128:128"


def inswapper(path, **kwargs):
    """inswapper_128 (or a stand-in of it) at ``path``, on the CPU."""
    return load("inswapper_128", path, ["cpu"], **kwargs)


def restorer(path, key: str = "gfpgan_1.4", **kwargs):
    return load(key, path, ["cpu"], **kwargs)


def swap_crops(swapper, crops, matrices, embedding):
    """Patches for aligned crops with their matrices, from a raw source embedding."""
    source = swapper.prepare_source({"embedding": np.asarray(embedding, np.float32)})
    return swapper.swap(list(crops), [{"matrix": m} for m in matrices], source)


def paste_back(img: np.ndarray, fake: np.ndarray, matrix: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The workflow's paste-back (facepipe.media.patches.paste_eroded_crop) on a copy of the frame."""
    out = img.copy()
    paste_eroded_crop(out, fake, matrix, mask)
    return out


def swap_frame(swapper, img: np.ndarray, target_faces: list) -> np.ndarray:
    """A whole frame with every target face replaced by an offline (pixel) swapper's source face,
    each face swapped on the frame with the earlier ones already pasted, as the swap stage does."""
    from facepipe.media.patches import apply_patch

    out = img.copy()
    for face in target_faces:
        landmarks = face.get("landmarks")
        if landmarks is None:
            raise swapper.no_landmarks()
        patch = swapper.swap_one(out, swapper.points(landmarks, "a target face"))
        if patch is not None:
            apply_patch(out, patch)
    return out
