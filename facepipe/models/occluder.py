"""Occlusion masks: DeepFaceLab's XSeg, as FaceFusion exports it (xseg_1, xseg_3)."""

from __future__ import annotations

import numpy as np

from facepipe.models.masker import AlignedMasker, finish_mask

# The occluder stand-in's face: an ellipse (centre x, y, semi-axes x, y as fractions of the crop)
# around where the arcface_128 template puts the face; a pixel whose mean of the channels (in
# [0, 1]) is at most OCCLUDER_DARK covers it, one at twice that or brighter does not.
OCCLUDER_ELLIPSE = (0.5, 0.56, 0.36, 0.42)


OCCLUDER_DARK = 0.08


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

    @staticmethod
    def standin_signature(spec):
        """FaceFusion's face_masker binds the input as "input" and reads the first output; XSeg takes
        NHWC BGR in [0, 1] with a free batch and gives [N, H, W, 1]."""
        # lazy: the stand-in builder, with onnx, is slow to import, and only this path needs it
        from facepipe.models.standin import ModelSignature, TensorSig

        return ModelSignature((TensorSig("input", "float32", ("batch", spec.size, spec.size, 3)),),
                              (TensorSig("output", "float32", ("batch", spec.size, spec.size, 1)),))

    @staticmethod
    def build_standin(graph, spec) -> None:
        _occluder_standin(graph, spec)

    def masks(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """The occlusion mask of each crop (see the class), a batch of crops per model call."""
        raw = [out[..., 0] for out in self._outputs(list(crops))]
        return [finish_mask(r, (c.shape[1], c.shape[0])) for r, c in zip(raw, crops)]


def _occluder_standin(g, spec) -> None:
    """An ellipse where the aligned face is, less every dark pixel: 1 = face visible, 0 = covered.

    Dark pixels stand for an object in front of the face, so a test can put one there and see
    the occlusion mask reach the paste; the real XSeg learns what covers a face instead."""
    side = spec.size
    centre = (np.arange(side, dtype=np.float32) + 0.5) / side
    x, y = np.meshgrid(centre, centre)
    cx, cy, ax, ay = OCCLUDER_ELLIPSE
    inside = ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0
    # The brightness scaled so that OCCLUDER_DARK is 1 and twice it 2 (a matrix product with the
    # channels' weights), less 1 inside the ellipse and a huge number outside it, clipped to
    # [0, 1]: three whole-tensor passes, a tenth of what ReduceMean, Sub, Mul, Clip and Mul took
    # (11 ms a batch of 8 on one core; the stand-in should cost next to nothing).
    weights = np.full((3, 1), 1.0 / (3 * OCCLUDER_DARK), np.float32)
    offset = np.where(inside, 1.0, 1e6).astype(np.float32)[None, :, :, None]  # NHWC, like the real output
    scaled = g.op("MatMul", ["input", g.const(weights)])  # [N, H, W, 1]
    g.op("Clip", [g.op("Sub", [scaled, g.const(offset)]), g.const(0.0), g.const(1.0)], "output")
