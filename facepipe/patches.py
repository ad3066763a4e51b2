"""Face patches: what the swap and enhance stages hand on, instead of whole frames.

A patch is the smallest thing that reproduces a stage's change to a frame: the learned
swapper's 128 px aligned crop and its affine matrix, the enhancer's 512 px aligned crop and
matrix, or (classic swap) the final pixels of a rectangle. Applying a frame's patches in order
to the decoded frame gives exactly the frame the stage made, so the render stage can decode,
paste and encode in one pass, and only a few kB per face are stored between stages.

The blending maths lives here, shared by the stages (which apply each patch before making the
next, so a second face is swapped on a frame that already has the first) and the render.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

PATCH_COLUMNS = ["frame", "face", "kind", "x", "y", "matrix", "kps", "image"]
KINDS = ("inswapper", "ffhq", "pixels")


@dataclass
class Patch:
    kind: str  # inswapper | ffhq | pixels
    image: np.ndarray  # BGR uint8
    matrix: np.ndarray | None = None  # 2x3 frame -> crop, for the aligned-crop kinds
    x: int = 0  # top-left corner, for kind "pixels"
    y: int = 0
    frame: int = 0
    face: int = 0
    kps: np.ndarray | None = field(default=None, repr=False)  # the target face's 5 keypoints

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown patch kind {self.kind!r}; known: {KINDS}")


def apply_patch(img: np.ndarray, patch: Patch) -> tuple[int, int, int, int] | None:
    """Apply one patch to a BGR frame in place; the rectangle (x0, y0, x1, y1) it changed, or None."""
    if patch.kind == "inswapper":
        return paste_inswapper(img, patch.image, patch.matrix)
    if patch.kind == "ffhq":
        return paste_ffhq(img, patch.image, patch.matrix)
    h, w = patch.image.shape[:2]
    x1, y1 = min(patch.x + w, img.shape[1]), min(patch.y + h, img.shape[0])
    img[patch.y : y1, patch.x : x1] = patch.image[: y1 - patch.y, : x1 - patch.x]
    return patch.x, patch.y, x1, y1


def apply_patches(img: np.ndarray, patches: list[Patch]) -> tuple[int, int, int, int] | None:
    """Apply patches in order, in place; the bounding rectangle of everything changed."""
    rect = None
    for patch in patches:
        r = apply_patch(img, patch)
        if r is not None:
            rect = r if rect is None else (min(rect[0], r[0]), min(rect[1], r[1]),
                                           max(rect[2], r[2]), max(rect[3], r[3]))
    return rect


def _roi(inverse: np.ndarray, size: int, margin: int, shape) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float32) @ inverse.T
    x0 = max(int(np.floor(corners[:, 0].min())) - margin, 0)
    y0 = max(int(np.floor(corners[:, 1].min())) - margin, 0)
    x1 = min(int(np.ceil(corners[:, 0].max())) + margin, w)
    y1 = min(int(np.ceil(corners[:, 1].max())) + margin, h)
    return x0, y0, x1, y1


def paste_inswapper(img: np.ndarray, fake: np.ndarray, matrix: np.ndarray) -> tuple[int, int, int, int] | None:
    """Blend a swapped aligned crop back into the frame (in place), working only around the face.

    The mask is insightface's own (INSwapper.get with paste_back=True: the warped crop square,
    eroded by a tenth of its size and feathered by a twentieth), but insightface warps and blurs
    full-frame images for every face, which costs ~0.3 s per 1080p frame; here the same
    operations run on the face's bounding box plus the feathering margin, with the same result.
    """
    size = fake.shape[0]
    inverse = cv2.invertAffineTransform(np.asarray(matrix, np.float64).reshape(2, 3))
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float32) @ inverse.T
    # Feathering margin from the unclipped square: an upper bound of what the mask needs.
    margin = 2 * max(int(np.sqrt(np.ptp(corners[:, 0]) * np.ptp(corners[:, 1]))) // 20, 5) + 4
    x0, y0, x1, y1 = _roi(inverse, size, margin, img.shape)
    if x1 <= x0 or y1 <= y0:
        return None
    shifted = inverse.copy()
    shifted[:, 2] -= (x0, y0)
    roi_size = (x1 - x0, y1 - y0)
    fake_roi = cv2.warpAffine(fake, shifted, roi_size, borderValue=0.0)
    white = cv2.warpAffine(np.full((size, size), 255, np.uint8), shifted, roi_size, borderValue=0)
    full = white > 20
    rows, cols = np.flatnonzero(full.any(axis=1)), np.flatnonzero(full.any(axis=0))
    if rows.size == 0:
        return None
    # Mask extent measured as insightface does: on the visible part of the warped square.
    mask_size = int(np.sqrt((rows[-1] - rows[0]) * (cols[-1] - cols[0])))
    erode = max(mask_size // 10, 10)
    blur = max(mask_size // 20, 5)
    # In 8 bits (the faint warp edge below the threshold is eroded away anyway): erosion by a
    # rectangle runs separably, and the blend below is OpenCV's, not numpy's float64.
    mask = white
    mask[full] = 255
    mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_RECT, (erode, erode)))
    if blur >= 12:
        # A wide feather is as smooth at half resolution (sigma halved) and four times cheaper;
        # the result stays within 2 grey levels of insightface's (tests/test_swap.py).
        sigma = 0.3 * (blur - 1) + 0.8  # OpenCV's sigma for a (2 * blur + 1) kernel
        half = cv2.resize(mask, ((mask.shape[1] + 1) // 2, (mask.shape[0] + 1) // 2), interpolation=cv2.INTER_AREA)
        half = cv2.GaussianBlur(half.astype(np.float32), (0, 0), sigma / 2)
        weight = cv2.resize(half, roi_size, interpolation=cv2.INTER_LINEAR) * np.float32(1 / 255)
    else:
        weight = cv2.GaussianBlur(mask, (2 * blur + 1, 2 * blur + 1), 0).astype(np.float32) * np.float32(1 / 255)
    roi = img[y0:y1, x0:x1]
    img[y0:y1, x0:x1] = cv2.blendLinear(fake_roi, roi, weight, 1 - weight)
    return x0, y0, x1, y1


def box_mask(size: int, blur: float = 0.3, padding: float = 0.05) -> np.ndarray:
    """A feathered rectangle so a pasted enhanced face has no visible seam."""
    blur_amount = int(size * 0.5 * blur)
    blur_area = max(blur_amount // 2, 1)
    pad = max(int(size * padding), blur_area)
    mask = np.ones((size, size), np.float32)
    mask[:pad, :] = 0
    mask[-pad:, :] = 0
    mask[:, :pad] = 0
    mask[:, -pad:] = 0
    if blur_amount > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), blur_amount * 0.25)
    return mask


_BOX_MASKS: dict[int, np.ndarray] = {}


def paste_ffhq(img: np.ndarray, crop: np.ndarray, matrix: np.ndarray) -> tuple[int, int, int, int] | None:
    """Blend an enhanced FFHQ-aligned crop back into the frame (in place) with a feathered box mask."""
    size = crop.shape[0]
    if size not in _BOX_MASKS:
        _BOX_MASKS[size] = box_mask(size)
    inverse = cv2.invertAffineTransform(np.asarray(matrix, np.float64).reshape(2, 3))
    x0, y0, x1, y1 = _roi(inverse, size, 2, img.shape)
    if x1 <= x0 or y1 <= y0:
        return None
    shifted = inverse.copy()
    shifted[:, 2] -= (x0, y0)
    roi_size = (x1 - x0, y1 - y0)
    mask = cv2.warpAffine(_BOX_MASKS[size], shifted, roi_size).clip(0, 1)[:, :, None]
    pasted = cv2.warpAffine(crop, shifted, roi_size, borderMode=cv2.BORDER_REPLICATE)
    roi = img[y0:y1, x0:x1]
    img[y0:y1, x0:x1] = (mask * pasted + (1 - mask) * roi).round().astype(np.uint8)
    return x0, y0, x1, y1


def encode_png(img: np.ndarray) -> bytes:
    # Lossless; low compression because patches are written once and read once or twice.
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError("could not encode a patch as PNG")
    return buf.tobytes()


def write_patches(patches: list[Patch], path: str | Path) -> None:
    """One table per segment (atomically written): frame, face, kind, corner, matrix, kps, PNG."""
    rows = [{"frame": p.frame, "face": p.face, "kind": p.kind, "x": p.x, "y": p.y,
             "matrix": None if p.matrix is None else np.asarray(p.matrix, np.float64).reshape(-1).tolist(),
             "kps": None if p.kps is None else np.asarray(p.kps, np.float32).reshape(-1).tolist(),
             "image": encode_png(p.image)} for p in patches]
    table = pd.DataFrame(rows, columns=PATCH_COLUMNS)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    table.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def decode_png(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def read_patches(path: str | Path) -> dict[int, list[Patch]]:
    """The patches of a segment by frame number, each frame's in the order they were made."""
    table = pd.read_parquet(path)
    by_frame: dict[int, list[Patch]] = {}
    for row in table.itertuples():
        image = decode_png(row.image)
        matrix = None if row.matrix is None else np.asarray(row.matrix, np.float64).reshape(2, 3)
        kps = None if row.kps is None else np.asarray(row.kps, np.float32).reshape(5, 2)
        by_frame.setdefault(int(row.frame), []).append(
            Patch(kind=row.kind, image=image, matrix=matrix, x=int(row.x), y=int(row.y), frame=int(row.frame),
                  face=int(row.face), kps=kps))
    return by_frame
