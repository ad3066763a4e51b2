"""A classic (model-free) face swap for the offline backend.

The source face is warped onto each target face by its 68 landmarks, piecewise-affine over
one triangulation of the landmarks, colour matched to the target in Lab, and blended in
with a feathered mask that lies inside the convex hull of the target's landmarks: nothing
outside that hull changes, so no seam shows at its edge and the rest of the frame is
bit-identical to the input.

It works on 68 landmarks (given, or the face mesh's 68-point subset: as_68). It needs, from the
source, a crop of the source image and its landmarks in that crop:
`source_patch` makes them and the embedding cache stores them (facepipe.faces.embedding).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from facepipe.media.patches import Patch
from facepipe.models.piecewise import piecewise_maps, signed_areas, triangle_affines, triangle_ids

log = logging.getLogger(__name__)

# The source crop keeps the face at most this many pixels wide: plenty for video faces,
# and it keeps the cached npz small.
MAX_SOURCE_FACE = 400
# Feathering width as a share of the target face width: wide enough that no seam shows,
# narrow enough to keep the source's features (eyebrows and jaw lie near the hull edge).
FEATHER = 0.07
# Limits on the colour-matching gain, so a flat or tiny region cannot blow up the contrast.
_STD_GAIN = (0.5, 2.0)


class SwapError(Exception):
    """A face record the classic swapper cannot use (e.g. without 68 landmarks)."""


def hull_bbox(points: np.ndarray, shape: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    h, w = shape
    return (int(max(0, np.floor(x0 - mx))), int(max(0, np.floor(y0 - my))),
            int(min(w, np.ceil(x1 + mx) + 1)), int(min(h, np.ceil(y1 + my) + 1)))


def source_patch(img: np.ndarray, landmarks: np.ndarray, *, margin: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """The source face's crop (BGR) and its landmarks (68 points, or the mesh's 468) in crop coordinates."""
    lm = np.asarray(landmarks, dtype=np.float32).reshape(-1, 2)
    x0, y0, x1, y1 = hull_bbox(lm, img.shape[:2], margin)
    crop = img[y0:y1, x0:x1]
    lm = lm - np.array([x0, y0], dtype=np.float32)
    width = float(lm[:, 0].max() - lm[:, 0].min())
    if width > MAX_SOURCE_FACE:
        scale = MAX_SOURCE_FACE / width
        crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        lm = lm * scale
    return np.ascontiguousarray(crop), lm.astype(np.float32)


def source_image(crop: np.ndarray, landmarks) -> np.ndarray:
    """The source crop as the pixel swaps paste it: with a dense mesh (468 points), its glasses'
    frame painted out (facepipe.models.glasses: warped onto the target it read as a ghost of
    glasses); glasses are not the face."""
    # lazy: facepipe.models.glasses reads mesh_swap's contours, and mesh_swap imports this module
    from facepipe.models.glasses import without_glasses

    crop = np.ascontiguousarray(crop)
    points = np.asarray(landmarks, np.float32).reshape(-1, 2)
    if len(points) != 468:
        return crop
    painted = without_glasses(crop, points)
    if painted is not crop:
        log.info("the source face wears glasses: they are painted out of it (a source photo without them swaps "
                 "better)")
    return np.ascontiguousarray(painted)


def as_68(landmarks, what: str) -> np.ndarray:
    """The 68 landmarks (iBUG layout) of a face: as given, or taken from the face mesh's 468 points
    (facepipe.models.face_mesh.MESH_TO_68; the offline backend's faces tables and sources hold the mesh)."""
    lm = np.asarray(landmarks, dtype=np.float32)
    if lm.size == 2 * 468:
        # lazy: imported only on the path that needs it
        from facepipe.models.face_mesh import landmarks_68

        lm = landmarks_68(lm)
    if lm.size != 136 or not np.isfinite(lm).all():
        raise SwapError(f"{what} has {lm.size // 2} landmarks, not 68 (or the mesh's 468) finite points; the "
                        f"classic swapper needs a faces table and source made with backend=offline")
    return lm.reshape(68, 2)


def triangulate(points: np.ndarray) -> np.ndarray:
    """Delaunay triangles of the points, as (n, 3) indices into them."""
    # lazy: SciPy is slow to import, and only this path needs it
    from scipy.spatial import Delaunay

    return Delaunay(np.asarray(points, dtype=np.float64)).simplices.astype(np.int32)


def face_mask(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 mask (255 inside) of the convex hull of the landmarks: the region a swap may change."""
    mask = np.zeros(shape, dtype=np.uint8)
    hull = cv2.convexHull(np.round(np.asarray(landmarks).reshape(-1, 2)).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 255)
    return mask


def _match_colour(warped: np.ndarray, target: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Reinhard colour transfer in Lab: the warped face takes the target's mean and spread."""
    if region.sum() < 16:
        return warped
    w_lab = cv2.cvtColor(warped, cv2.COLOR_BGR2LAB).astype(np.float32)
    t_lab = cv2.cvtColor(target, cv2.COLOR_BGR2LAB).astype(np.float32)
    w_px, t_px = w_lab[region], t_lab[region]
    w_mu, w_sd = w_px.mean(axis=0), w_px.std(axis=0) + 1e-3
    t_mu, t_sd = t_px.mean(axis=0), t_px.std(axis=0) + 1e-3
    gain = np.clip(t_sd / w_sd, *_STD_GAIN)
    out = (w_lab - w_mu) * gain + t_mu
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2BGR)


def blended_patch(roi: np.ndarray, warped: np.ndarray, alpha: np.ndarray, x0: int, y0: int):
    """The "pixels" patch of ``warped`` blended over the frame's ``roi`` (at x0, y0) by ``alpha``:
    where alpha is 0 the frame's own pixels, exactly."""

    blended = roi.astype(np.float32) * (1 - alpha[..., None]) + warped.astype(np.float32) * alpha[..., None]
    blended = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    final = roi.copy()
    np.copyto(final, blended, where=(alpha > 0)[..., None])
    return Patch(kind="pixels", image=final, x=x0, y=y0)


class PixelSwapper:
    """What the offline swaps share: a source crop with its points, pasted over each target face's
    points as a "pixels" patch. Subclasses say how points are read (``points``) and swap one face
    (``swap_one``); ``name`` is what their errors call them."""

    name = "offline"

    def points(self, landmarks, what: str) -> np.ndarray:
        raise NotImplementedError

    def swap_one(self, img: np.ndarray, points: np.ndarray):
        raise NotImplementedError

    @classmethod
    def from_source(cls, data: dict, where: str = "source embedding"):
        """From the source record (facepipe.faces.embedding's npz): needs source_crop and source_landmarks."""
        missing = [k for k in ("source_crop", "source_landmarks") if k not in data]
        if missing:
            raise SwapError(f"{where} has no {', '.join(missing)}: it was made by another backend; "
                            f"the offline swapper needs one made with backend=offline")
        return cls(data["source_crop"], data["source_landmarks"])

    def no_landmarks(self) -> SwapError:
        return SwapError(f"a target face has no landmarks; the {self.name} swapper needs a faces table made "
                         f"with backend=offline")

    def patch_from_crop(self, crop: np.ndarray, *, x: int, y: int, landmarks, **_):
        """The swapped face from the crop detection kept (the landmarks' rectangle at x, y)."""
        if landmarks is None:
            raise self.no_landmarks()
        patch = self.swap_one(crop, self.points(landmarks, "a target face") - np.array([x, y], np.float32))
        if patch is not None:
            patch.x, patch.y = patch.x + x, patch.y + y
        return patch


class ClassicSwapper(PixelSwapper):
    """Pastes one source face onto target faces over 68 landmarks (a mesh's 68-point subset)."""

    name = "classic"

    def __init__(self, source_crop: np.ndarray, source_landmarks: np.ndarray):
        self.src = source_image(source_crop, source_landmarks)
        self.src_lm = as_68(source_landmarks, "the source face")
        # One triangulation, made on the source, used for every target: corresponding
        # triangles then always cover the same part of the face.
        self.triangles = triangulate(self.src_lm)

    def points(self, landmarks, what: str) -> np.ndarray:
        return as_68(landmarks, what)

    def swap_one(self, img: np.ndarray, target_lm: np.ndarray):
        """The swapped face as a "pixels" patch over its landmarks' rectangle, or None."""

        h, w = img.shape[:2]
        x0, y0, x1, y1 = hull_bbox(target_lm, (h, w), 0.0)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None  # a face this small (or off-frame) has nothing to paste onto
        lm = target_lm - np.array([x0, y0], dtype=np.float32)
        roi_shape = (y1 - y0, x1 - x0)

        # Which triangle each ROI pixel lies in (-1: none), then one remap through each
        # triangle's target->source affine map: a piecewise-affine warp in a single pass.
        # Degenerate triangles in the target (e.g. a closed mouth) have no pixels.
        dst = lm[self.triangles]
        drawn = np.flatnonzero(np.abs(signed_areas(dst)) >= 1e-3)
        inv = np.zeros((len(drawn) + 1, 2, 3), dtype=np.float32)  # the last entry: outside every triangle
        inv[:-1] = triangle_affines(dst[drawn], self.src_lm[self.triangles[drawn]])
        tri_id = triangle_ids(np.round(dst[drawn]).astype(np.int32), roi_shape)
        map_x, map_y = piecewise_maps(inv, tri_id)
        warped = cv2.remap(self.src, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

        inside = (face_mask(lm, roi_shape) > 0) & (tri_id >= 0)
        face_w = float(lm[:, 0].max() - lm[:, 0].min())
        k = max(2, int(round(FEATHER * face_w)))
        # Erode by k, then blur with a (2k+1) kernel: the blurred mask reaches back out by at
        # most k pixels, so it is zero on and outside the hull and the edge is a soft ramp.
        core = cv2.erode(inside.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1,) * 2))
        if core.sum() == 0:
            return None
        alpha = cv2.GaussianBlur(core.astype(np.float32), (2 * k + 1, 2 * k + 1), k / 2.0)
        alpha[~inside] = 0.0

        roi = img[y0:y1, x0:x1]
        return blended_patch(roi, _match_colour(warped, roi, core > 0), alpha, x0, y0)
