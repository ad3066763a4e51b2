"""Face patches: what the swap and enhance stages hand on, instead of whole frames.

A patch is the smallest thing that reproduces a stage's change to a frame. Its kind says how it
is pasted: "eroded_crop", an aligned crop and its affine matrix pasted back through insightface's
eroded and blurred mask (a learned swapper's crop, whichever swapper made it); "feathered_crop",
an aligned crop and matrix pasted through a feathered box (a face restorer's); or "pixels", the
final pixels of a rectangle (the offline swaps'). Applying a frame's patches in order
to the decoded frame gives exactly the frame the stage made, so the render stage can decode,
paste and encode in one pass, and only a few kB per face are stored between stages.

A patch may carry a paste mask (Patch.mask): what covers the face (a hand, a cup) or a region the
job keeps is 0 there, and every paste of an aligned crop goes through it, so the target's own
pixels stay in front wherever the stage that made the patch said so.

The blending maths lives here, shared by the stages (which apply each patch before making the
next, so a second face is swapped on a frame that already has the first) and the render.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from facepipe.media.i420 import bgr_to_yuv444, chroma_aligned, frame_size, region_bgr, split_i420, write_region
from facepipe.media.integrity import reject
from facepipe.media.tables import PATCHES_SCHEMA, iter_frame_records, write_table

KINDS = ("eroded_crop", "feathered_crop", "pixels")


@dataclass
class Patch:
    kind: str  # how it is pasted: eroded_crop | feathered_crop | pixels (KINDS)
    image: np.ndarray  # BGR uint8
    matrix: np.ndarray | None = None  # 2x3 frame -> crop, for the aligned-crop kinds
    x: int = 0  # top-left corner, for kind "pixels"
    y: int = 0
    frame: int = 0
    face: int = 0
    kps: np.ndarray | None = field(default=None, repr=False)  # the target face's 5 keypoints
    # The paste mask: uint8, image's height x width, in the image's own pixel space (the aligned
    # crop for "eroded_crop" and "feathered_crop", the rectangle for "pixels"); 255 pastes the
    # patch's pixels fully, 0 keeps the target's own. None: the paste's own feather alone. "pixels" patches
    # have it baked into their pixels already: for them it only records what was kept.
    mask: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown patch kind {self.kind!r}; known: {KINDS}")


def apply_patch(img: np.ndarray, patch: Patch) -> tuple[int, int, int, int] | None:
    """Apply one patch to a BGR frame in place; the rectangle (x0, y0, x1, y1) it changed, or None."""
    if patch.kind == "eroded_crop":
        return paste_eroded_crop(img, patch.image, patch.matrix, patch.mask)
    if patch.kind == "feathered_crop":
        return paste_feathered_crop(img, patch.image, patch.matrix, patch.mask)
    rect = patch_rect(patch, img.shape)
    if rect is not None:
        x0, y0, x1, y1 = rect
        img[y0:y1, x0:x1] = patch.image[: y1 - y0, : x1 - x0]
    return rect


def apply_patches(img: np.ndarray, patches: list[Patch]) -> tuple[int, int, int, int] | None:
    """Apply patches in order, in place; the bounding rectangle of everything changed."""
    rect = None
    for patch in patches:
        rect = _union(rect, apply_patch(img, patch))
    return rect


def _union(a, b):
    """The bounding rectangle of two (x0, y0, x1, y1) rectangles, either of which may be None."""
    if a is None or b is None:
        return a if b is None else b
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _corners(inverse: np.ndarray, size: int) -> np.ndarray:
    """Where the corners of a size x size crop land in the frame."""
    return np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float32) @ inverse.T


def _roi(inverse: np.ndarray, size: int, margin: int, shape) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    corners = _corners(inverse, size)
    x0 = max(int(np.floor(corners[:, 0].min())) - margin, 0)
    y0 = max(int(np.floor(corners[:, 1].min())) - margin, 0)
    x1 = min(int(np.ceil(corners[:, 0].max())) + margin, w)
    y1 = min(int(np.ceil(corners[:, 1].max())) + margin, h)
    return x0, y0, x1, y1


def _eroded_roi(size: int, inverse: np.ndarray, shape) -> tuple[int, int, int, int]:
    corners = _corners(inverse, size)
    # Feathering margin from the unclipped square: an upper bound of what the mask needs.
    margin = 2 * max(int(np.sqrt(np.ptp(corners[:, 0]) * np.ptp(corners[:, 1]))) // 20, 5) + 4
    return _roi(inverse, size, margin, shape)


def patch_rect(patch: Patch, shape) -> tuple[int, int, int, int] | None:
    """The rectangle (x0, y0, x1, y1) of a frame of this shape that apply_patch may change."""
    h, w = shape[:2]
    if patch.kind == "pixels":
        rect = (patch.x, patch.y, min(patch.x + patch.image.shape[1], w), min(patch.y + patch.image.shape[0], h))
    else:
        inverse = cv2.invertAffineTransform(np.asarray(patch.matrix, np.float64).reshape(2, 3))
        size = patch.image.shape[0]
        rect = _eroded_roi(size, inverse, shape) if patch.kind == "eroded_crop" else _roi(inverse, size, 2, shape)
    return rect if rect[2] > rect[0] and rect[3] > rect[1] else None


@dataclass
class _Feather:
    """insightface's paste-back mask as blend weights in [0, 1], over the part of the ROI where
    they are not all 0 (`support`: x0, y0, x1, y1 in ROI coordinates, x0 and y0 even)."""

    weight: np.ndarray
    support: tuple[int, int, int, int]
    half: np.ndarray | None = None  # the same at half resolution, when made there (for chroma)


def _eroded_feather(size: int, shifted: np.ndarray, roi_size: tuple[int, int]) -> _Feather | None:
    """The mask of an aligned crop warped by `shifted` (crop -> ROI) into an ROI; None: not visible."""
    return _feather_of_square(cv2.warpAffine(np.full((size, size), 255, np.uint8), shifted, roi_size, borderValue=0))


def _feather_of_square(white: np.ndarray) -> _Feather | None:
    """_eroded_feather from the crop's square of 255 as warped into the ROI (0 around it)."""
    # insightface sets the warped square's pixels above 20 to 255; the faint edge below that
    # is eroded away just below, so a binary threshold is the same mask.
    mask = cv2.threshold(white, 20, 255, cv2.THRESH_BINARY)[1]
    # The rows and columns the mask spans (OpenCV's bounding rectangle of its non-zero pixels).
    _, _, width, height = cv2.boundingRect(mask)
    if width == 0:
        return None
    # Mask extent measured as insightface does: on the visible part of the warped square.
    mask_size = int(np.sqrt((height - 1) * (width - 1)))
    erode = max(mask_size // 10, 10)
    blur = max(mask_size // 20, 5)
    # Erosion by a rectangle runs separably in 8 bits; the blur runs in float as insightface's.
    mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_RECT, (erode, erode)))
    h, w = white.shape
    if blur < 12:
        weight = cv2.GaussianBlur(mask, (2 * blur + 1, 2 * blur + 1), 0).astype(np.float32) * np.float32(1 / 255)
        return _Feather(weight, (0, 0, w, h))
    # A wide feather is as smooth at half resolution (sigma halved) and four times cheaper;
    # the result stays within 2 grey levels of insightface's (tests/test_swap.py).
    sigma = 0.3 * (blur - 1) + 0.8  # OpenCV's sigma for a (2 * blur + 1) kernel
    # Exact halving; the padding repeats the edge, as the blur's own border handling would.
    mask = cv2.copyMakeBorder(mask, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)
    half = cv2.resize(mask, (mask.shape[1] // 2, mask.shape[0] // 2), interpolation=cv2.INTER_AREA)
    half = cv2.GaussianBlur(half.astype(np.float32), (0, 0), sigma / 2) * np.float32(1 / 255)
    hr, hc = np.flatnonzero(half.any(axis=1)), np.flatnonzero(half.any(axis=0))
    if hr.size == 0:
        return None
    # Keep one zero sample around the non-zero ones: upscaling blends each sample with its neighbours.
    r0, r1 = max(hr[0] - 1, 0), min(hr[-1] + 2, half.shape[0])
    c0, c1 = max(hc[0] - 1, 0), min(hc[-1] + 2, half.shape[1])
    half = half[r0:r1, c0:c1]
    weight = cv2.resize(half, (2 * (c1 - c0), 2 * (r1 - r0)), interpolation=cv2.INTER_LINEAR)
    support = (2 * c0, 2 * r0, min(2 * c1, w), min(2 * r1, h))
    return _Feather(weight[: support[3] - support[1], : support[2] - support[0]], support, half)


# How far (crop pixels) a paste mask is extended beyond its crop before warping: past the reach of
# any feather (insightface's stops within a pixel of the crop, the half-resolution one within 3).
_MASK_EDGE = 16


def _warped_mask(mask: np.ndarray, shifted: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A patch's paste mask (uint8, 255: the patch) warped by `shifted` (crop -> part of the
    frame) into a `size` (w, h) part of the frame, as blend weights in [0, 1].

    Warped as uint8: OpenCV's fixed-point bilinear weights sum exactly, so a mask of 255 stays
    255 and its weight is exactly 1. Beyond the crop's outer pixel centres the mask repeats its
    edge: the feather alone fades the crop's edge out (it still weighs a little there), and a
    border of 0 would dim it, so a mask of 255 everywhere would not paste exactly as no mask
    does. The edge is repeated by padding the mask, not by the warp's replicated border, which
    costs half as much again on the many pixels that land outside the crop.
    """
    padded = cv2.copyMakeBorder(mask, _MASK_EDGE, _MASK_EDGE, _MASK_EDGE, _MASK_EDGE, cv2.BORDER_REPLICATE)
    warped = cv2.warpAffine(padded, _from_padded(shifted), size, flags=cv2.INTER_LINEAR, borderValue=0)
    return warped.astype(np.float32) / np.float32(255)


def _from_padded(shifted: np.ndarray) -> np.ndarray:
    """`shifted` (crop -> part of the frame) for the crop padded by _MASK_EDGE on every side."""
    from_padded = shifted.copy()
    from_padded[:, 2] -= shifted[:, :2] @ (_MASK_EDGE, _MASK_EDGE)
    return from_padded


def _eroded_placement(size: int, matrix: np.ndarray, shape, even: bool = False):
    """ROI (x0, y0, x1, y1) of the frame and the crop -> ROI matrix of a size x size crop, or None."""
    inverse = cv2.invertAffineTransform(np.asarray(matrix, np.float64).reshape(2, 3))
    x0, y0, x1, y1 = _eroded_roi(size, inverse, shape)
    if even:
        x0, y0, x1, y1 = chroma_aligned((x0, y0, x1, y1), shape[1], shape[0])
    if x1 <= x0 or y1 <= y0:
        return None
    shifted = inverse.copy()
    shifted[:, 2] -= (x0, y0)
    return (x0, y0, x1, y1), shifted


def _eroded_geometry(fake: np.ndarray, matrix: np.ndarray, shape):
    """ROI (x0, y0, x1, y1) of the frame, the crop -> ROI matrix and the feather, or None."""
    size = fake.shape[0]
    placed = _eroded_placement(size, matrix, shape)
    if placed is None:
        return None
    (x0, y0, x1, y1), shifted = placed
    feather = _eroded_feather(size, shifted, (x1 - x0, y1 - y0))
    if feather is None:
        return None
    return (x0, y0, x1, y1), shifted, feather


def paste_eroded_crop(img: np.ndarray, fake: np.ndarray, matrix: np.ndarray,
                    mask: np.ndarray | None = None) -> tuple[int, int, int, int] | None:
    """Blend a swapped aligned crop back into the frame (in place), working only around the face.

    The mask is insightface's own (INSwapper.get with paste_back=True: the warped crop square,
    eroded by a tenth of its size and feathered by a twentieth), but insightface warps and blurs
    full-frame images for every face, which costs ~0.3 s per 1080p frame; here the same
    operations run on the face's bounding box plus the feathering margin, with the same result.
    A paste mask (Patch.mask, in the crop's space) multiplies that feather.
    """
    found = _eroded_geometry(fake, matrix, img.shape)
    if found is None:
        return None
    (x0, y0, x1, y1), shifted, feather = found
    sx0, sy0, sx1, sy1 = feather.support
    # Only where the weight is not 0 does the frame change: warp and blend just there.
    shifted[:, 2] -= (sx0, sy0)
    fake_part = cv2.warpAffine(fake, shifted, (sx1 - sx0, sy1 - sy0), borderValue=0.0)
    weight = feather.weight
    if mask is not None:
        weight = weight * _warped_mask(mask, shifted, (sx1 - sx0, sy1 - sy0))
    part = img[y0 + sy0 : y0 + sy1, x0 + sx0 : x0 + sx1]
    part[:] = cv2.blendLinear(fake_part, part, weight, 1 - weight)
    return x0, y0, x1, y1


def paste_eroded_crop_i420(planes, fake: np.ndarray, matrix: np.ndarray,
                         mask: np.ndarray | None = None) -> tuple[int, int, int, int] | None:
    """paste_eroded_crop on a frame given as its (Y, U, V) planes (even size), blended in YUV.

    Converting to YUV is affine, so blending there with the same weights is blending in BGR up
    to rounding; chroma blends at its own half resolution with the half-resolution weights.
    The frame is never converted to BGR, and only the crop itself is converted to YUV.
    A paste mask multiplies the luma weights, and its 2x2 averages the chroma's.
    """
    y_plane, u_plane, v_plane = planes
    size = fake.shape[0]
    placed = _eroded_placement(size, matrix, y_plane.shape, even=True)
    if placed is None:
        return None
    (x0, y0, x1, y1), shifted = placed
    fy, fu, fv = bgr_to_yuv444(fake)
    # One warp carries the crop's square (the feather starts from it), its luma and the paste mask
    # into the ROI: four channels are OpenCV's vectorised case, one warp of them costs about what
    # one of a single channel does. Each channel is padded as its own warp's border would give it:
    # the square with 0, the luma with black (Y 16, as insightface's BGR 0 is), the mask with its
    # edge repeated (_warped_mask). Each channel is what its own warp gives, within 1 grey level at
    # a few pixels in ten thousand (the padded crop's offset rounds some sample positions apart).
    e = _MASK_EDGE
    layers = np.zeros((size + 2 * e, size + 2 * e, 4), np.uint8)
    layers[e:-e, e:-e, 0] = 255
    layers[..., 1] = cv2.copyMakeBorder(fy, e, e, e, e, cv2.BORDER_CONSTANT, value=16)
    if mask is not None:
        layers[..., 2] = cv2.copyMakeBorder(mask, e, e, e, e, cv2.BORDER_REPLICATE)
    layered = cv2.warpAffine(layers, _from_padded(shifted), (x1 - x0, y1 - y0), borderValue=(0, 16, 0, 0))
    # (extractChannel: split would copy the unused channel too)
    feather = _feather_of_square(cv2.extractChannel(layered, 0))
    if feather is None:
        return None
    sx0, sy0, sx1, sy1 = feather.support
    shifted[:, 2] -= (sx0, sy0)
    part = y_plane[y0 + sy0 : y0 + sy1, x0 + sx0 : x0 + sx1]
    weight = feather.weight
    layered = layered[sy0:sy1, sx0:sx1]
    mask_weight = None
    if mask is not None:
        mask_weight = cv2.extractChannel(layered, 2).astype(np.float32) / np.float32(255)
        weight = weight * mask_weight
    part[:] = cv2.blendLinear(cv2.extractChannel(layered, 1), part, weight, 1 - weight)
    cw, ch = (sx1 - sx0) // 2, (sy1 - sy0) // 2
    half = feather.half
    if half is None:
        half = cv2.resize(weight, (cw, ch), interpolation=cv2.INTER_AREA)
    elif mask_weight is not None:
        # The feather's own half-resolution weights (what the unmasked paste uses) times the
        # mask's 2x2 averages: a mask of 1 everywhere leaves them exactly as they were.
        half = half * cv2.resize(mask_weight, (cw, ch), interpolation=cv2.INTER_AREA)
    # A chroma sample stands for a 2x2 block: its centre is at (2i + 0.5) in luma coordinates.
    shifted_half = shifted * 0.5
    shifted_half[:, 2] -= 0.25
    # Where a crop pixel covers less than 2 frame pixels, sampling it straight at chroma
    # resolution would alias: warp at full resolution and average 2x2 blocks instead.
    minified = abs(np.linalg.det(shifted[:, :2])) < 4
    # U and V in one warp too (four channels, as above; two of them unused), grey (128) outside.
    chroma = cv2.merge([fu, fv, fu, fv])
    if minified:
        warped_uv = cv2.warpAffine(chroma, shifted, (2 * cw, 2 * ch), borderValue=(128, 128, 128, 128))
        warped_uv = cv2.resize(warped_uv, (cw, ch), interpolation=cv2.INTER_AREA)
    else:
        warped_uv = cv2.warpAffine(chroma, shifted_half, (cw, ch), borderValue=(128, 128, 128, 128))
    cx, cy = (x0 + sx0) // 2, (y0 + sy0) // 2
    for channel, plane in enumerate((u_plane, v_plane)):
        part = plane[cy : cy + ch, cx : cx + cw]
        part[:] = cv2.blendLinear(cv2.extractChannel(warped_uv, channel), part, half, 1 - half)
    return x0, y0, x1, y1


def _moved(patch: Patch, x0: int, y0: int) -> Patch:
    """The patch for the frame's rectangle whose top-left corner is (x0, y0)."""

    if patch.kind == "pixels":
        return replace(patch, x=patch.x - x0, y=patch.y - y0)
    matrix = np.asarray(patch.matrix, np.float64).reshape(2, 3).copy()
    matrix[:, 2] += matrix[:, :2] @ (x0, y0)  # frame = rect + (x0, y0)
    return replace(patch, matrix=matrix)


def patch_to_frame(patch: Patch) -> np.ndarray:
    """The 2x3 matrix from a patch image's pixels to the frame's: the inverse of an aligned
    crop's matrix, or the translation to a rectangle's corner."""
    if patch.kind == "pixels":
        return np.array([[1.0, 0.0, patch.x], [0.0, 1.0, patch.y]])
    return cv2.invertAffineTransform(np.asarray(patch.matrix, np.float64).reshape(2, 3))


def mask_in_crop(patch: Patch, matrix: np.ndarray, size: int) -> np.ndarray | None:
    """A patch's paste mask carried into another aligned crop of the same frame (frame -> crop
    `matrix`, size x size), so a later stage's patch of the face (the enhancer's) keeps the
    target's pixels where this one did; None when the patch has no mask or it keeps nothing there.

    Beyond the patch's own image the mask repeats its edge: an occluder that crosses the edge goes
    on, a mask of 255 stays 255, and no seam appears along the patch's border.
    """
    if patch.mask is None:
        return None
    frame_to_crop = np.asarray(matrix, np.float64).reshape(2, 3)
    to_frame = patch_to_frame(patch)
    # crop(frame(p)): the linear parts multiply, the offsets go through the second's linear part.
    composed = np.hstack([frame_to_crop[:, :2] @ to_frame[:, :2],
                          (frame_to_crop[:, :2] @ to_frame[:, 2] + frame_to_crop[:, 2])[:, None]])
    carried = cv2.warpAffine(patch.mask, composed, (size, size), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
    return None if carried.min() == 255 else carried


def apply_patches_i420(i420: np.ndarray, patches: list[Patch]) -> tuple[int, int, int, int] | None:
    """apply_patches on an I420 frame, in place, converting nothing outside the faces.

    Swapped faces blend in YUV (paste_eroded_crop_i420); other patches convert their rectangle
    to BGR and back.
    """
    w, h = frame_size(i420)  # even: working sizes always are (facepipe.media.video.working_size)
    planes = split_i420(i420, w, h)
    rect = None
    for patch in patches:
        if patch.kind == "eroded_crop":
            r = paste_eroded_crop_i420(planes, patch.image, patch.matrix, patch.mask)
        else:
            r = patch_rect(patch, (h, w))
            if r is not None:
                r = chroma_aligned(r, w, h)
                roi = region_bgr(planes, r)
                if apply_patch(roi, _moved(patch, r[0], r[1])) is not None:
                    write_region(planes, roi, r)
        rect = _union(rect, r)
    return rect


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


def paste_feathered_crop(img: np.ndarray, crop: np.ndarray, matrix: np.ndarray,
               mask: np.ndarray | None = None) -> tuple[int, int, int, int] | None:
    """Blend an enhanced FFHQ-aligned crop back into the frame (in place) with a feathered box
    mask, times the paste mask (Patch.mask, in the crop's space) when there is one."""
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
    weight = cv2.warpAffine(_BOX_MASKS[size], shifted, roi_size).clip(0, 1)
    if mask is not None:
        weight = weight * _warped_mask(mask, shifted, roi_size)
    weight = weight[:, :, None]
    pasted = cv2.warpAffine(crop, shifted, roi_size, borderMode=cv2.BORDER_REPLICATE)
    roi = img[y0:y1, x0:x1]
    img[y0:y1, x0:x1] = (weight * pasted + (1 - weight) * roi).round().astype(np.uint8)
    return x0, y0, x1, y1


def encode_image(img: np.ndarray) -> bytes:
    """A crop or patch as bytes: NumPy's .npy format, raw and self-describing. The tables
    holding them are zstd-compressed as a whole, which is as small as PNG and 4 times faster.
    img: BGR (H x W x 3), or an I420 array (H*3/2 rows of W, both even: facepipe.media.i420) for
    pixels cut from a decoded frame, half the bytes of their BGR and converted only when used."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(img), allow_pickle=False)
    return buf.getvalue()


def _is_i420(img: np.ndarray) -> bool:
    rows, width = img.shape
    return rows % 3 == 0 and width % 2 == 0  # h*3/2 rows of an even h


def decode_image(data: bytes) -> np.ndarray:
    """A crop or patch from its bytes (encode_image) as BGR; ValueError unless they hold a BGR
    uint8 image (H x W x 3) or an I420 one, so that bytes that decode to something else never
    reach a frame."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n":  # tables written by earlier versions
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        else:
            img = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # np.load raises many kinds on bad bytes (ValueError, EOFError, SyntaxError...)
        raise ValueError(f"image bytes do not decode ({type(exc).__name__}: {exc})") from None
    if isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 2 and img.size and _is_i420(img):
        # The same pixels as converting the whole frame (its corners are even: facepipe.media.i420).
        return cv2.cvtColor(img, cv2.COLOR_YUV2BGR_I420)
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 \
            or img.size == 0:
        what = "nothing" if img is None else f"{getattr(img, 'dtype', type(img).__name__)} {getattr(img, 'shape', '')}"
        raise ValueError(f"image bytes decode to {what}, not a BGR or I420 uint8 image")
    return img


def encode_mask(mask: np.ndarray) -> bytes:
    """A paste mask as bytes: a single-channel PNG (masks are mostly one value, which PNG's
    filters and deflate make a few hundred bytes)."""
    ok, data = cv2.imencode(".png", np.ascontiguousarray(mask))
    if not ok:
        raise ValueError(f"a mask of {mask.dtype} {mask.shape} does not encode as PNG")
    return data.tobytes()


def decode_mask(data: bytes) -> np.ndarray:
    """A paste mask from its bytes (encode_mask); ValueError unless they hold a single-channel
    uint8 PNG, so bytes that decode to something else never reach a paste."""
    mask = None
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        mask = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise ValueError("mask bytes do not decode as PNG")
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise ValueError(f"mask bytes decode to {mask.dtype} {mask.shape}, not a single-channel uint8 mask")
    return mask


# The side of the aligned crop a patch holds is its model's (128 or 256 px, times the pixel
# boost; an enhancer's 256 to 2048), so what is checked is that it is square and not tiny.
MIN_ALIGNED_SIZE = 64


def check_matrix(values, what: str = "matrix") -> np.ndarray:
    """A 2x3 affine matrix from a table's list column; ValueError unless finite and invertible."""
    m = None if values is None else np.asarray(values, np.float64).reshape(-1)
    if m is None or m.size != 6 or not np.isfinite(m).all():
        raise ValueError(f"its {what} is not 6 finite numbers")
    m = m.reshape(2, 3)
    if abs(np.linalg.det(m[:, :2])) < 1e-9:
        raise ValueError(f"its {what} is not invertible")
    return m


def check_patch(patch: Patch) -> Patch:
    """ValueError unless a patch read back from a table is one a stage can have made."""
    h, w = patch.image.shape[:2]
    if patch.kind in ("eroded_crop", "feathered_crop") and (h != w or h < MIN_ALIGNED_SIZE):
        raise ValueError(f"its {patch.kind} image is {w}x{h}, not a square of {MIN_ALIGNED_SIZE} px or more")
    if patch.kind in ("eroded_crop", "feathered_crop"):
        check_matrix(patch.matrix)
    elif patch.x < 0 or patch.y < 0:
        raise ValueError(f"its corner ({patch.x}, {patch.y}) is outside the frame")
    if patch.kps is not None and (patch.kps.size != 10 or not np.isfinite(patch.kps).all()):
        raise ValueError("its keypoints are not 10 finite numbers")
    mask = patch.mask
    if mask is not None and (not isinstance(mask, np.ndarray) or mask.dtype != np.uint8
                             or mask.shape != (h, w)):
        what = f"{getattr(mask, 'dtype', type(mask).__name__)} {getattr(mask, 'shape', '')}"
        raise ValueError(f"its mask is {what}, not uint8 {h}x{w} as its image")
    return patch


def patch_row(p: Patch) -> dict:
    return {"frame": p.frame, "face": p.face, "kind": p.kind, "x": p.x, "y": p.y,
            "matrix": None if p.matrix is None else np.asarray(p.matrix, np.float64).reshape(-1).tolist(),
            "kps": None if p.kps is None else np.asarray(p.kps, np.float32).reshape(-1).tolist(),
            "image": encode_image(p.image), "mask": None if p.mask is None else encode_mask(p.mask)}


def write_patches(frames: Iterable[list[Patch]], path: str | Path) -> int:
    """A segment's patch table (frame, face, kind, corner, matrix, kps, image, mask) from each frame's
    patches, written as they come (facepipe.media.tables); returns the number of patches."""

    return write_table(([patch_row(p) for p in frame] for frame in frames), path, PATCHES_SCHEMA)


def iter_patches(path: str | Path) -> Iterator[tuple[int, list[Patch]]]:
    """(frame, its patches in the order they were made), frame by frame, a row group at a time.
    The table is verified first (facepipe.media.tables.iter_frame_records), and a patch that does not
    decode to what a stage makes is an error naming the file, never pasted."""

    def patch(row: dict) -> Patch:
        try:
            return check_patch(Patch(
                kind=row["kind"], image=decode_image(row["image"]),
                matrix=None if row["matrix"] is None else np.asarray(row["matrix"], np.float64).reshape(2, 3),
                x=int(row["x"]), y=int(row["y"]), frame=int(row["frame"]), face=int(row["face"]),
                kps=None if row["kps"] is None else np.asarray(row["kps"], np.float32).reshape(5, 2),
                # A table from before masks has no mask column: its patches paste as they did.
                mask=None if row.get("mask") is None else decode_mask(row["mask"])))
        except (ValueError, TypeError) as exc:
            reject(path, f"the patch of frame {row['frame']}, face {row['face']} is not usable: {exc}")

    for frame_no, rows in iter_frame_records(path):
        yield int(frame_no), [patch(row) for row in rows]


class FramePatches:
    """Patches looked up by frame number, read as the frames come (numbers must not go back)."""

    def __init__(self, path: str | Path):
        self._it = iter_patches(path)
        self._next = next(self._it, None)

    def get(self, frame_no: int, default=None):
        while self._next is not None and self._next[0] < frame_no:
            self._next = next(self._it, None)
        if self._next is not None and self._next[0] == frame_no:
            return self._next[1]
        return default


def read_patches(path: str | Path) -> dict[int, list[Patch]]:
    """The patches of a segment by frame number, each frame's in the order they were made."""
    return dict(iter_patches(path))
