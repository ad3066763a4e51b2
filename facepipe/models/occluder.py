"""Occlusion masks: DeepFaceLab's XSeg, as FaceFusion exports it (xseg_1, xseg_3)."""

from __future__ import annotations

import numpy as np

from facepipe.models.masker import AlignedMasker, finish_mask


class Occluder(AlignedMasker):
    """Where the face is visible and where something covers it (a hand, a cup, a microphone).

    In: BGR uint8 crops of target faces, aligned by the five keypoints (facepipe.models.alignment) to
    the swapper's template, arcface_128, any square side (128, 256, a pixel-boosted 512: each is
    scaled to the model's 256 px and the mask back). The model takes NHWC BGR in [0, 1].

    Out: one float32 mask per crop, the crop's height x width, in [0, 1]: 1 where the face is
    visible (swap it), 0 where something covers it or outside the face (keep the target's
    pixels). Finished as FaceFusion finishes it (facepipe.models.masker.finish_mask).
    """

    layout = "nhwc"
    channels = "bgr"

    def masks(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """The occlusion mask of each crop (see the class), a batch of crops per model call."""
        raw = [out[..., 0] for out in self._outputs(list(crops))]
        return [finish_mask(r, (c.shape[1], c.shape[0])) for r, c in zip(raw, crops)]
