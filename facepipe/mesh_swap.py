"""The offline backend's swap over MediaPipe's dense face mesh (468 points, facepipe.mesh).

For each target face:

1. **Warp.** The source face is warped onto the target's mesh piecewise-affinely over the mesh's
   canonical triangulation (852 triangles, facepipe/data/face_mesh_triangles.txt). A triangle
   that faces away in the target or in the source (its winding flipped: the far side of a turned
   face) is left out, so a turned face never gets folded-over pixels.
2. **Regions.** The identity regions come from the source: the face inside its oval, less the
   eyes and the mouth, which stay the target's own pixels (a feathered hole around each), so the
   target's gaze, blinks, expression and speech are kept exactly.
3. **Tone and light.** The warped face takes the target skin's Lab mean and spread (Reinhard),
   then the target's low-frequency shading: the difference of the two faces' masked Gaussian
   means (about a sixth of the face wide) is added, so a shadow or a light falloff across the
   target face is carried over and the blend edge has nothing left to hide.
4. **Sharpness.** The target's own blur is estimated over its face (blur_sigma: Zhuo & Sim's
   gradient ratio at its edges, which the edges' contrast does not change) and the warped source
   is blurred with the Gaussian sigma (searched) that gives it the same: a defocused or soft
   target gets an equally soft face, and the feather widens with the target's blur.
5. **Blend.** A feathered alpha inside the face oval (eroded, then blurred, so it is zero on
   and outside the oval): every pixel outside the oval is bit-identical to the input.

The source needs, from facepipe.embedding's record, ``source_crop`` and ``source_landmarks``
(its 468 mesh points in the crop).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from facepipe.classic_swap import PixelSwapper, SwapError, _hull_bbox, blended_patch

log = logging.getLogger(__name__)

NUM_POINTS = 468
TRIANGLES_FILE = Path(__file__).with_name("data") / "face_mesh_triangles.txt"

# Closed contours of the mesh (MediaPipe's FACEMESH_FACE_OVAL, _LEFT_EYE, _RIGHT_EYE and the
# outer loop of FACEMESH_LIPS, in order; tests/test_mesh.py uses them).
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
EYE_IMAGE_LEFT = [33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7]
EYE_IMAGE_RIGHT = [263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249]
LIPS_OUTER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146]
# The oval's points above the brows, and how far (share of the way) they are pulled towards the
# mid-brow point 9: the upper forehead is often hair (a fringe) in the source or the target, and
# pasting it gives a band of the wrong texture.
FOREHEAD = [389, 251, 284, 332, 297, 338, 10, 109, 67, 103, 54, 21, 162]
MID_BROW = 9
FOREHEAD_PULL = 0.45

# Feathering width as a share of the face width (as the classic swapper).
FEATHER = 0.05
# How far the kept eyes and mouth reach beyond their contours, as a share of the face width:
# the lids, lashes and lip edges move with the expression, so the target keeps a rim of them.
EYE_MARGIN = 0.0
MOUTH_MARGIN = 0.02
# The kept regions' soft edge, as a share of the face width.
KEEP_FEATHER = 0.015
# The Gaussian of the shading transfer, as a share of the face width: coarse enough to leave the
# source's features alone, fine enough to follow a shadow across the face.
LIGHT_SIGMA = 1 / 3
# The feather's Gaussian on a defocused face, over the target's estimated blur: the ramp is a
# Gaussian cut at 2 sigma (kernel 2k+1), which reads sharper than a Gaussian edge of the same sigma.
# With a gain of 1 the pasted skin of t1's faces read 10-30% less blurred than the target's at a
# defocus of 3 px (blur_sigma).
RAMP_GAIN = 1.3
# Sharpness search: Gaussian sigmas tried (px), finest first.
_SIGMAS = np.concatenate([[0.0], np.geomspace(0.3, 12.0, 24)])
_STD_GAIN = (0.5, 2.0)


@lru_cache(maxsize=1)
def triangles() -> np.ndarray:
    """The mesh's canonical triangles, (852, 3) vertex indices."""
    rows = [line.split() for line in TRIANGLES_FILE.read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    tris = np.array(rows, dtype=np.int32)
    if tris.ndim != 2 or tris.shape[1] != 3 or tris.min() < 0 or tris.max() >= NUM_POINTS:
        raise SwapError(f"{TRIANGLES_FILE} is not a list of face-mesh triangles")
    return tris


def _points(landmarks, what: str) -> np.ndarray:
    pts = np.asarray(landmarks, dtype=np.float32)
    if pts.size != 2 * NUM_POINTS or not np.isfinite(pts).all():
        raise SwapError(f"{what} has {pts.size // 2} landmarks, not the face mesh's {NUM_POINTS} finite points; "
                        f"the mesh swapper needs a faces table and source made with backend=offline")
    return pts.reshape(NUM_POINTS, 2)


def _poly_mask(points: np.ndarray, idx: list[int], shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(points[idx]).astype(np.int32)], 255)
    return mask


def _signed_area(p: np.ndarray) -> np.ndarray:
    """Twice the signed area of each triangle (n, 3, 2)."""
    a, b = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    return a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]


def sharpness(gray: np.ndarray, mask: np.ndarray) -> float:
    """Variance of the Laplacian over a mask: the measure of sharpness used to match and to test."""
    lap = cv2.Laplacian(gray.astype(np.float32), cv2.CV_32F, ksize=3)
    vals = lap[mask]
    return float(vals.var()) if vals.size > 16 else 0.0


# Blur estimation (Zhuo & Sim's gradient-ratio defocus estimate): the re-blur applied (px), and the
# share of the region's strongest gradients, at their local maxima, that it is read at.
_REBLUR = 1.0
_EDGE_SHARE = 0.10


def _gradient(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gx, gy = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    return np.hypot(gx, gy), gx, gy


def _edge_peaks(mag: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Where the gradient magnitude is a maximum across the edge (non-maximum suppression along the
    gradient's direction, quantised to 45 degrees, as Canny's)."""
    angle = (np.round(np.arctan2(gy, gx) / (np.pi / 4)).astype(int)) % 4
    pad = np.pad(mag, 1, mode="edge")
    h, w = mag.shape
    peak = np.zeros(mag.shape, bool)
    for d, (dy, dx) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):
        fwd = pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
        bwd = pad[1 - dy:1 - dy + h, 1 - dx:1 - dx + w]
        peak |= (angle == d) & (mag >= fwd) & (mag >= bwd)
    return peak


def blur_sigma(gray: np.ndarray, mask: np.ndarray) -> float:
    """The Gaussian blur (px) of the edges over a mask, after Zhuo & Sim ("Defocus map estimation
    from a single image", 2011): at an edge blurred by s, re-blurring by s0 divides the gradient by
    R = sqrt(s^2 + s0^2) / s, so s = s0 / sqrt(R^2 - 1). It is read at the region's strongest
    gradients (local maxima) and the median taken: a ratio, so the edges' contrast (stubble, a
    dark brow, make-up) cancels, which the Laplacian's variance counts. 0 where there are no edges."""
    g = gray.astype(np.float32)
    m1, gx, gy = _gradient(g)
    m2 = _gradient(cv2.GaussianBlur(g, (0, 0), _REBLUR))[0]
    vals = m1[mask]
    if vals.size < 16:
        return 0.0
    sel = mask & (m1 >= np.quantile(vals, 1 - _EDGE_SHARE)) & (m1 > 1.0)
    sel &= _edge_peaks(m1, gx, gy)
    r = m1[sel] / np.maximum(m2[sel], 1e-6)
    r = r[r > 1.001]
    if r.size < 8:
        return 0.0
    return float(np.median(_REBLUR / np.sqrt(r ** 2 - 1)))


def match_sharpness(warped: np.ndarray, target: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, float]:
    """The warped face blurred to the target's blur over ``region`` (blur_sigma), and the sigma used
    (the smallest tried that makes it at least as blurred as the target's; 0 when it already is)."""
    t_gray = cv2.cvtColor(target, cv2.COLOR_BGR2GRAY)
    w_gray = cv2.cvtColor(warped, cv2.COLOR_BGR2GRAY)
    goal = blur_sigma(t_gray, region)
    prev_sigma, prev_b = 0.0, blur_sigma(w_gray, region)
    if prev_b >= goal or goal <= 0:
        return warped, 0.0
    sigma = float(_SIGMAS[-1])  # softer than the softest tried: that one
    for cand in _SIGMAS[1:]:
        b = blur_sigma(np.round(cv2.GaussianBlur(w_gray, (0, 0), float(cand))), region)
        if b >= goal:
            # Between the last two sigmas tried, interpolated linearly in the estimated blur.
            t = (goal - prev_b) / max(b - prev_b, 1e-9)
            sigma = prev_sigma + float(t) * (float(cand) - prev_sigma)
            break
        prev_sigma, prev_b = float(cand), b
    if sigma <= 0.05:
        return warped, 0.0
    return cv2.GaussianBlur(warped, (0, 0), float(sigma)), float(sigma)


def _masked_blur(img: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian mean of img over mask only (normalised convolution)."""
    m = mask.astype(np.float32)
    num = cv2.GaussianBlur(img * m[..., None], (0, 0), sigma)
    den = cv2.GaussianBlur(m, (0, 0), sigma)[..., None]
    return num / np.maximum(den, 1e-3)


def match_tone(warped: np.ndarray, target: np.ndarray, region: np.ndarray, sigma: float) -> np.ndarray:
    """Reinhard colour transfer in Lab over ``region``, then the target's shading (masked Gaussian
    means of both, difference added)."""
    if region.sum() < 16:
        return warped
    w_lab = cv2.cvtColor(warped, cv2.COLOR_BGR2LAB).astype(np.float32)
    t_lab = cv2.cvtColor(target, cv2.COLOR_BGR2LAB).astype(np.float32)
    w_px, t_px = w_lab[region], t_lab[region]
    gain = np.clip((t_px.std(axis=0) + 1e-3) / (w_px.std(axis=0) + 1e-3), *_STD_GAIN)
    out = (w_lab - w_px.mean(axis=0)) * gain + t_px.mean(axis=0)
    out += _masked_blur(t_lab, region, sigma) - _masked_blur(out, region, sigma)
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2BGR)


class MeshSwapper(PixelSwapper):
    """Pastes one source face onto target faces over the dense mesh (the offline swappers'
    interface, facepipe.classic_swap.PixelSwapper)."""

    name = "mesh"

    def __init__(self, source_crop: np.ndarray, source_landmarks: np.ndarray):
        self.src = np.ascontiguousarray(source_crop)
        self.src_pts = _points(source_landmarks, "the source face")
        self.triangles = triangles()
        self._src_area = _signed_area(self.src_pts[self.triangles])

    def points(self, landmarks, what: str) -> np.ndarray:
        return _points(landmarks, what)

    def masks(self, pts: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The face oval's mask and the kept (target) eyes-and-mouth mask, uint8, for points in a
        frame of ``shape``."""
        face_w = float(pts[:, 0].max() - pts[:, 0].min())
        region = pts.copy()
        region[FOREHEAD] += FOREHEAD_PULL * (pts[MID_BROW] - pts[FOREHEAD])
        oval = _poly_mask(region, FACE_OVAL, shape)
        keep = np.zeros(shape, np.uint8)
        for idx, margin in ((EYE_IMAGE_LEFT, EYE_MARGIN), (EYE_IMAGE_RIGHT, EYE_MARGIN), (LIPS_OUTER, MOUTH_MARGIN)):
            part = _poly_mask(pts, idx, shape)
            r = max(1, int(round(margin * face_w)))
            keep |= cv2.dilate(part, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2))
        return oval, keep

    def swap_one(self, img: np.ndarray, target_pts: np.ndarray):
        """The swapped face as a "pixels" patch over its mesh's rectangle, or None."""

        h, w = img.shape[:2]
        x0, y0, x1, y1 = _hull_bbox(target_pts, (h, w), 0.0)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None  # a face this small (or off-frame) has nothing to paste onto
        pts = target_pts - np.array([x0, y0], np.float32)
        shape = (y1 - y0, x1 - x0)
        face_w = float(pts[:, 0].max() - pts[:, 0].min())

        # Piecewise-affine warp in one remap: which triangle each pixel lies in, and that
        # triangle's target -> source map. Triangles flipped in either face are skipped.
        tris = self.triangles
        dst = pts[tris]
        area = _signed_area(dst)
        usable = (np.abs(area) > 1e-2) & (np.sign(area) == np.sign(self._src_area)) & (np.abs(self._src_area) > 1e-2)
        tri_id = np.full(shape, -1, dtype=np.int32)
        inv = np.zeros((len(tris) + 1, 2, 3), dtype=np.float32)
        for i in np.flatnonzero(usable):
            inv[i] = cv2.getAffineTransform(dst[i].astype(np.float32), self.src_pts[tris[i]].astype(np.float32))
            cv2.fillConvexPoly(tri_id, np.round(dst[i]).astype(np.int32), int(i))
        ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
        a = inv[tri_id]  # -1 picks the all-zero last entry
        map_x = a[..., 0, 0] * xs + a[..., 0, 1] * ys + a[..., 0, 2]
        map_y = a[..., 1, 0] * xs + a[..., 1, 1] * ys + a[..., 1, 2]
        warped = cv2.remap(self.src, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

        oval, keep = self.masks(pts, shape)
        inside = (oval > 0) & (tri_id >= 0)
        k = max(2, int(round(FEATHER * face_w)))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1,) * 2)
        # Erode by k, blur with a (2k+1) kernel: the ramp reaches back out by at most k pixels, so
        # alpha is zero on and outside the oval.
        core = cv2.erode(inside.astype(np.uint8), kernel)
        if core.sum() == 0:
            return None
        alpha = cv2.GaussianBlur(core.astype(np.float32), (2 * k + 1, 2 * k + 1), k / 2.0)

        roi = img[y0:y1, x0:x1]
        skin = (core > 0) & (keep == 0)
        if skin.sum() < 16:
            return None
        warped = match_tone(warped, roi, skin, max(2.0, LIGHT_SIGMA * face_w))
        # The blur is read over the whole face inside the core, the eyes and mouth included: the
        # estimate is a ratio at edges, so their contrast does not set the goal (as it did for the
        # Laplacian's variance), and they are the face's surest edges.
        region = core > 0
        warped, blur = match_sharpness(warped, roi, region)
        ramp = RAMP_GAIN * blur_sigma(cv2.cvtColor(roi, cv2.COLOR_BGR2GRAY), region)
        if blur > 0 and 2 * ramp > k:
            # The edge of the pasted face is no sharper than the target either: on a defocused face
            # the feather's ramp (sigma k/2) would otherwise be the sharpest thing in it. Its width
            # follows the target's own blur (not the blur added to the source, which is less), and
            # it stays zero on and outside the oval.
            k = int(np.ceil(2 * ramp))
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1,) * 2)
            core = cv2.erode(inside.astype(np.uint8), kernel)
            if core.sum() == 0:
                return None
            alpha = cv2.GaussianBlur(core.astype(np.float32), (2 * k + 1, 2 * k + 1), k / 2.0)
        # The kept eyes and mouth fade in over at least the target's own blur: a hard edge between
        # the source's lids and the target's eyes would be the sharpest thing in a defocused face.
        kk = max(1, int(round(KEEP_FEATHER * face_w)))
        keep_soft = cv2.GaussianBlur(cv2.dilate(keep, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * kk + 1,) * 2))
                                     .astype(np.float32) / 255.0, (0, 0), max(kk / 2.0, 1.5 * blur))
        alpha *= 1.0 - keep_soft
        alpha[~inside] = 0.0
        return blended_patch(roi, warped, alpha, x0, y0)
