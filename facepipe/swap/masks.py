"""Face masks: which pixels of a swapped face are pasted, and which stay the target's own.

The options follow FaceFusion's names (``face_mask_types``, ``face_mask_blur``,
``face_mask_padding``, ``face_mask_regions``):

- ``box``: a feathered rectangle over the aligned crop, ``mask_blur`` (a share of the crop's side)
  and ``mask_padding`` (top, right, bottom, left, percent of the side);
- ``occlusion``: whatever covers the face (a hand, a cup, hair) stays in front of it: on the
  learned backends the job's occluder model (FaceFusion's XSeg, facepipe.models.occluder), on the
  offline backend the track's own appearance (facepipe.swap.occlusion, nothing downloaded);
- ``region``: only the face regions in ``mask_regions`` are swapped: on the learned backends from
  the face parser (BiSeNet, facepipe.models.face_parser), on the offline one from its dense mesh;
- ``mouth``: the target's own mouth is kept (its speech, its teeth), as Deep-Live-Cam's mouth
  mask does. The offline mesh swap always keeps the target's eyes and mouth.

The masks chosen are multiplied: a pixel is swapped only as far as every mask allows. On the
learned path the product is the swapped patch's paste mask (facepipe.media.patches.Patch.mask),
which the render and the enhancer paste through.
"""

from __future__ import annotations

import cv2
import numpy as np

from facepipe.models.alignment import TEMPLATES
from facepipe.models.face_parser import REGIONS
from facepipe.models.mesh_swap import EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT, FACE_OVAL, LIPS_OUTER

MASK_TYPES = ("box", "occlusion", "region", "mouth")
MASK_REGIONS = tuple(REGIONS)
# The mouth mask around the mouth corners, in units of their distance: wide enough for a smile
# and for an open mouth's lips and teeth.
MOUTH_HALF_WIDTH = 0.75
MOUTH_HALF_HEIGHT = 0.6
MOUTH_DROP = 0.15  # the ellipse's centre below the corners' midpoint (the lower lip is fuller)
MOUTH_FEATHER = 0.12  # feather (Gaussian sigma) in units of the corners' distance


# The face regions on the offline backend's dense mesh (MediaPipe's 468 points), by FaceFusion's
# names; left and right as the image shows them. The mesh has no glasses region (the occlusion mask keeps a
# target's glasses, facepipe.models.glasses); the lips are one region.
MESH_EYEBROW_IMAGE_LEFT = [70, 63, 105, 66, 107, 55, 65, 52, 53, 46]
MESH_EYEBROW_IMAGE_RIGHT = [300, 293, 334, 296, 336, 285, 295, 282, 283, 276]
MESH_NOSE = [168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 97, 98, 326, 327, 129, 358, 64, 294]


def mesh_regions(mesh: np.ndarray, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Each face region of a dense mesh as a uint8 mask of `shape` (1 inside)."""

    def polygon(idx, hull=False):
        mask = np.zeros(shape, np.uint8)
        pts = np.round(mesh[idx]).astype(np.int32)
        cv2.fillPoly(mask, [cv2.convexHull(pts) if hull else pts], 1)
        return mask

    lips = polygon(LIPS_OUTER)
    out = {"left-eye": polygon(EYE_IMAGE_LEFT), "right-eye": polygon(EYE_IMAGE_RIGHT),
           "left-eyebrow": polygon(MESH_EYEBROW_IMAGE_LEFT), "right-eyebrow": polygon(MESH_EYEBROW_IMAGE_RIGHT),
           "nose": polygon(MESH_NOSE, hull=True), "mouth": lips, "upper-lip": lips, "lower-lip": lips}
    others = np.zeros(shape, np.uint8)
    for mask in out.values():
        others |= mask
    out["skin"] = polygon(FACE_OVAL) & (1 - others)
    return out


def mesh_region_keep(mesh: np.ndarray, shape: tuple[int, int], regions) -> np.ndarray:
    """Where an offline swap keeps the target's pixels for ``face_mask`` region: the face's
    regions not in ``regions`` (float32, 1 = keep, feathered by a fiftieth of the face's width)."""
    parts = mesh_regions(np.asarray(mesh, np.float32), shape)
    keep = np.zeros(shape, np.uint8)
    for name, mask in parts.items():
        if name not in regions:
            keep |= mask
    if "skin" not in regions:
        # The skin is what lies between the other regions: keeping it keeps the whole face but them.
        keep |= parts["skin"]
    swap = np.zeros(shape, np.uint8)
    for name in regions:
        swap |= parts.get(name, np.zeros(shape, np.uint8))
    keep &= 1 - swap
    width = float(np.ptp(np.asarray(mesh)[:, 0])) if len(mesh) else 0.0
    sigma = max(width / 50.0, 0.5)
    return np.clip(cv2.GaussianBlur(keep.astype(np.float32), (0, 0), sigma), 0.0, 1.0)


def box_mask(side: int, blur: float, padding: tuple[float, float, float, float]) -> np.ndarray:
    """FaceFusion's static box mask on a ``side`` square crop: 1 inside the padded rectangle, its
    edges feathered by ``blur`` (a share of the side), 0 at the crop's border."""
    blur_amount = int(side * 0.5 * blur)
    blur_area = max(blur_amount // 2, 1)
    top, right, bottom, left = (max(blur_area, int(side * p / 100)) for p in padding)
    mask = np.ones((side, side), np.float32)
    mask[:top, :] = 0
    mask[side - bottom:, :] = 0
    mask[:, :left] = 0
    mask[:, side - right:] = 0
    if blur_amount > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), blur_amount * 0.25)
    return mask


def mouth_keep_mask(side: int, template: str = "arcface_128") -> np.ndarray:
    """1 over the target's mouth on an aligned crop (the template puts the mouth corners at fixed
    places), feathered; 0 elsewhere."""
    corners = TEMPLATES[template][3:5] * side
    centre = corners.mean(0)
    span = float(np.linalg.norm(corners[1] - corners[0]))
    centre = centre + (0.0, MOUTH_DROP * span)
    mask = np.zeros((side, side), np.float32)
    cv2.ellipse(mask, (int(round(centre[0])), int(round(centre[1]))),
                (int(round(MOUTH_HALF_WIDTH * span)), int(round(MOUTH_HALF_HEIGHT * span))), 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), max(MOUTH_FEATHER * span, 0.5))


class AlignedCropMasks:
    """The masks of a job on the learned path, on the swapper's aligned crops (arcface_128).

    ``occluder`` and ``parser``: the job's mask models (facepipe.models), loaded only when
    ``face_mask`` asks for them. ``masks`` gives each crop's paste mask (float32 in [0, 1], 1 =
    swap), or None for a crop every mask leaves whole (then the patch needs none)."""

    def __init__(self, face_mask, *, blur: float, padding, regions, occluder=None, parser=None,
                 template: str = "arcface_128"):
        self.types = tuple(face_mask)
        self.blur = float(blur)
        self.padding = tuple(float(p) for p in padding)
        self.regions = tuple(regions)
        self.occluder = occluder if "occlusion" in self.types else None
        self.parser = parser if "region" in self.types else None
        if "occlusion" in self.types and occluder is None:
            raise ValueError("face_mask has occlusion, but the job has no occluder model")
        if "region" in self.types and parser is None:
            raise ValueError("face_mask has region, but the job has no face parser model")
        self.template = template
        self._fixed: dict[int, np.ndarray | None] = {}

    def _fixed_mask(self, side: int) -> np.ndarray | None:
        """The masks that depend only on the crop's side (box, mouth), multiplied, or None."""
        if side not in self._fixed:
            mask = None
            if "box" in self.types:
                mask = box_mask(side, self.blur, self.padding)
            if "mouth" in self.types:
                keep = 1.0 - mouth_keep_mask(side, self.template)
                mask = keep if mask is None else mask * keep
            self._fixed[side] = mask
        return self._fixed[side]

    def masks(self, crops: list[np.ndarray]) -> list[np.ndarray | None]:
        """Each crop's paste mask; the models run a batch of crops per call."""
        out: list[np.ndarray | None] = [self._fixed_mask(c.shape[0]) for c in crops]
        for model, kwargs in ((self.occluder, {}), (self.parser, {"regions": self.regions})):
            if model is None or not crops:
                continue
            for i, mask in enumerate(model.masks(list(crops), **kwargs)):
                out[i] = mask if out[i] is None else out[i] * mask
        return [None if m is None else np.clip(m, 0.0, 1.0).astype(np.float32) for m in out]


def as_patch_mask(mask: np.ndarray | None) -> np.ndarray | None:
    """A paste mask as a patch stores it (uint8, 255 = swap), or None when it swaps everything."""
    if mask is None:
        return None
    stored = np.clip(np.round(mask * 255), 0, 255).astype(np.uint8)
    return None if stored.min() == 255 else stored
