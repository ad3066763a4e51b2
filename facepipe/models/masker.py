"""What the learned mask models share: an aligned face crop in, a float32 mask of that crop out.

A mask says, per pixel of the crop, how much of the swapped face goes there: 1 = swap, 0 = keep
the target's own pixels (a hand, a cup, hair in front of the face; the parts of the face a user
keeps). The models run where FaceFusion's face_masker runs them: on the swapper's own crop,
aligned by the five keypoints to the arcface_128 template (facepipe.models.alignment), resized to the
model's input side and back, in batches of crops per model call on the job's providers.

The mask is finished as FaceFusion finishes it: scaled back to the crop's side, blurred, and
its lower half cut off (values under 0.5 become 0, the rest is stretched to [0, 1]). That
erodes the face a little and gives the border a soft edge, so a covering object keeps a thin
margin of its own pixels instead of a swapped halo.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from facepipe.models.alignment import alignment_matrix
from facepipe.models.registry import ModelSpec
from facepipe.models.runtime import BatchedSession, create_session, normalized

# FaceFusion blurs its masks with sigma 5 px on a 256 px crop; as a fraction of the crop's side,
# the edge is equally soft in face units at any crop size (pixel boost, 128 px inswapper crops).
BLUR_SIGMA_PER_SIDE = 5.0 / 256.0


def finish_mask(raw: np.ndarray, side: tuple[int, int]) -> np.ndarray:
    """A model's mask (any size, values in [0, 1]) on a crop of ``side`` (width, height): scaled,
    blurred and cut at 0.5 as FaceFusion's face_masker does."""
    mask = cv2.resize(np.clip(raw, 0.0, 1.0).astype(np.float32), side, interpolation=cv2.INTER_LINEAR)
    mask = cv2.GaussianBlur(mask, (0, 0), BLUR_SIGMA_PER_SIDE * max(side))
    return ((np.clip(mask, 0.5, 1.0) - 0.5) * 2.0).astype(np.float32)


class AlignedMasker:
    """A mask model on aligned face crops: its one input is named "input" (as FaceFusion binds
    it) and its first output is read. Subclasses say the input's layout ("nhwc" or "nchw") and
    channel order ("bgr" or "rgb"); the registry entry gives its side, template, mean and std."""

    layout = "nhwc"
    channels = "bgr"

    def __init__(self, spec: ModelSpec, model, providers: list[str], *, threads: int = 0, precision: str = "fp32",
                 batch_size: int = 1, io_binding: bool | None = None):
        self.spec = spec
        self.size = spec.size
        self.session = create_session(model, providers, threads=threads, precision=precision)
        inputs = self.session.get_inputs()
        if [i.name for i in inputs] != ["input"]:
            names = [i.name for i in inputs]
            raise ValueError(f"{model}: inputs {names}, but a {spec.family} mask model takes 'input'")
        side = inputs[0].shape[1 if self.layout == "nhwc" else 2]
        if isinstance(side, int) and side != self.size:
            raise ValueError(f"{model} takes {side} px crops, its registry entry says {self.size}")
        self.runner = BatchedSession(self.session, batch_size, name=str(model), io_binding=io_binding)
        self._mean = np.asarray(spec.mean, np.float32)
        self._std = np.asarray(spec.std, np.float32)

    @property
    def batch_size(self) -> int:
        return self.runner.size

    def crop(self, frame: np.ndarray, kps) -> tuple[np.ndarray, np.ndarray]:
        """The face's crop aligned to the model's template at its size (BGR, like ``frame``), and
        its frame -> crop matrix."""
        matrix = alignment_matrix(kps, self.spec.template, self.size)
        crop = cv2.warpAffine(frame, matrix, (self.size, self.size), borderMode=cv2.BORDER_REPLICATE,
                              flags=cv2.INTER_AREA)
        return crop, matrix

    def _fit(self, crop: np.ndarray) -> np.ndarray:
        if crop.ndim != 3 or crop.shape[2] != 3:
            raise ValueError(f"{self.spec.key} takes BGR crops (H x W x 3), got shape {crop.shape}")
        if crop.shape[:2] == (self.size, self.size):
            return crop
        # INTER_AREA when shrinking (a pixel-boosted crop) so fine detail does not alias.
        shrink = max(crop.shape[:2]) > self.size
        return cv2.resize(crop, (self.size, self.size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)

    def _outputs(self, crops: list[np.ndarray]) -> Iterator[np.ndarray]:
        """The model's first output for each crop (its batch axis removed), a batch per call."""
        fitted = [self._fit(c) for c in crops]
        for chunk, call in self.runner.batches(fitted):
            pixels = np.stack(call)
            if self.channels == "rgb":
                pixels = pixels[..., ::-1]
            blob = normalized(pixels, self._mean, self._std)
            if self.layout == "nchw":
                blob = blob.transpose(0, 3, 1, 2)
            yield from self.runner.run({"input": np.ascontiguousarray(blob, np.float32)})[0][:len(chunk)]

    def masks_for_faces(self, frame: np.ndarray, kps_list, **kwargs) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each face's five keypoints, its mask on the model's own aligned crop (``size``
        square) and that crop's frame -> crop matrix; ``kwargs`` go to ``masks``."""
        cropped = [self.crop(frame, kps) for kps in kps_list]
        masks = self.masks([c for c, _ in cropped], **kwargs)
        return [(mask, matrix) for mask, (_, matrix) in zip(masks, cropped)]

    def masks(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError
