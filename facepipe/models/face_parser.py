"""Face regions: BiSeNet face parsers trained on CelebAMask-HQ, as FaceFusion exports them."""

from __future__ import annotations

import cv2
import numpy as np

from facepipe.models.masker import AlignedMasker, finish_mask

# CelebAMask-HQ's 19 classes, in the order of the parser's output channels.
CLASSES = ("background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
           "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat")
# The regions a user may keep as face, by FaceFusion's names (its face_mask_region_set).
REGIONS = {"skin": 1, "left-eyebrow": 2, "right-eyebrow": 3, "left-eye": 4, "right-eye": 5, "glasses": 6,
           "nose": 10, "mouth": 11, "upper-lip": 12, "lower-lip": 13}
# FaceFusion's default: every region, i.e. the whole face without hair, ears, neck and background.
DEFAULT_REGIONS = tuple(REGIONS)


def region_classes(regions) -> list[int]:
    """The class ids of FaceFusion region names; an unknown name is an error that lists them."""
    unknown = [r for r in regions if r not in REGIONS]
    if unknown:
        raise ValueError(f"unknown face region(s) {unknown}; expected any of {list(REGIONS)}")
    return sorted({REGIONS[r] for r in regions})


class FaceParser(AlignedMasker):
    """Which pixels of a face crop belong to which part of the face.

    In: BGR uint8 crops of target faces, aligned by the five keypoints (facepipe.models.alignment) to
    the swapper's template, arcface_128, any square side (each is scaled to the model's 512 px
    and the result back). The model takes NCHW RGB normalised by ImageNet's mean and std, and
    gives 19 class logits per pixel (CLASSES).

    Out (``masks``): one float32 mask per crop, the crop's height x width, in [0, 1]: 1 on the
    union of the ``regions`` kept as face (FaceFusion's names, REGIONS; swap there), 0 elsewhere
    (keep the target's pixels: hair, ears, neck, background, and any region left out, such as
    the mouth to keep the target's own). Finished as FaceFusion finishes it
    (facepipe.models.masker.finish_mask). ``labels`` gives the class map itself.
    """

    layout = "nchw"
    channels = "rgb"

    def labels(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """Each crop's class map (uint8 CelebAMask-HQ ids, CLASSES), the crop's height x width."""
        return [cv2.resize(out.argmax(0).astype(np.uint8), (c.shape[1], c.shape[0]), interpolation=cv2.INTER_NEAREST)
                for out, c in zip(self._outputs(list(crops)), crops)]

    def masks(self, crops: list[np.ndarray], regions=DEFAULT_REGIONS) -> list[np.ndarray]:
        """The union mask of ``regions`` on each crop (see the class), a batch per model call."""
        classes = region_classes(regions)
        raw = [np.isin(out.argmax(0), classes).astype(np.float32) for out in self._outputs(list(crops))]
        return [finish_mask(r, (c.shape[1], c.shape[0])) for r, c in zip(raw, crops)]
