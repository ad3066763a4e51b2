"""Test helpers for the face models: load a swapper or restorer by registry key, swap single
crops, and insightface's own paste-back for comparisons."""

from __future__ import annotations

import cv2
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


def turn_face(img: np.ndarray, pts: np.ndarray, degrees: float) -> np.ndarray:
    """The photo with the face turned about the vertical axis through its middle: the band of
    columns within 0.6 face widths of the face's centre is a cylinder, seen turned by ``degrees``
    (the far side leaves the view); the rest of the frame is as it was."""
    h, w = img.shape[:2]
    cx = float(pts[:, 0].mean())
    radius = 0.6 * float(np.ptp(pts[:, 0]))
    x = np.arange(w, dtype=np.float64)
    u = np.clip((x - cx) / radius, -1.0, 1.0)
    angle = np.arcsin(u) - np.radians(degrees)
    map_x = np.where(np.abs(x - cx) < radius, cx + radius * np.sin(np.clip(angle, -np.pi / 2, np.pi / 2)), x)
    map_x = np.repeat(map_x[None].astype(np.float32), h, axis=0)
    map_y = np.repeat(np.arange(h, dtype=np.float32)[:, None], w, axis=1)
    return cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR)


def swap_with_occlusion(swapper, frame: np.ndarray, mesh: np.ndarray, appearance=None) -> np.ndarray:
    """One frame with its face swapped by an offline (pixel) swapper as the swap stage does it: the
    target's pixels put back where the track's appearance (facepipe.swap.occlusion.TrackAppearance,
    its samples added) says something covers the face; without one, the plain swap."""
    from facepipe.media.patches import apply_patch
    from facepipe.swap.occlusion import keep_occluded

    result = frame.copy()
    patch = swapper.swap_one(frame, mesh)
    if patch is not None:
        if appearance is not None:
            keep_occluded(patch, frame, 0, 0, appearance.mask(frame, mesh))
        apply_patch(result, patch)
    return result
