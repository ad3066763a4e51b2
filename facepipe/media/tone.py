"""A monochrome target stays monochrome.

A black-and-white picture (an old film, a photo in black and white, or one toned in sepia or
cyanotype blue) has no colour of its own: each pixel's a and b (Lab) are what the picture's tone
gives its lightness. A swap or a restorer brings a colour face's colour with it (the offline mesh
swap the source's lips and colour detail, a learned model whatever colour it gives faces), and on
such a picture a pink mouth or a flushed cheek reads as hand tinting. Where the target is
monochrome, a patch's colour is replaced by the target's tone at the patch's own lightness; where
the target has colour of its own, the patch is left exactly as it was made.
"""

from __future__ import annotations

import cv2
import numpy as np

# The target's colour of its own: the 90th percentile of its pixels' distance (Lab a and b) from
# its tone (their median a and b, and the least-squares slope of a and b with lightness). Measured
# over the faces of insightface's group photo: 8.8-13.6 in colour, 5.5-8.4 at half saturation,
# 0.8-1.2 toned sepia, 0.0 in grey. At or under the first figure a patch takes the target's tone;
# at or over the second it is left as it is; in between, a blend of the two.
MONOCHROME_SPREAD = (2.0, 5.0)
SPREAD_QUANTILE = 0.9
# The target's pixels are read one in SAMPLE_STEP each way: its tone and spread are statistics of
# thousands of pixels, and colour footage is told apart at that cost on every face.
SAMPLE_STEP = 4


def _lab(bgr: np.ndarray) -> np.ndarray:
    """Lab in float (L 0-100; a and b in the units of OpenCV's 8-bit Lab, less 128): a patch's
    colour is set without rounding its lightness or colour to 8 bits on the way."""
    return cv2.cvtColor(bgr.astype(np.float32) * np.float32(1 / 255), cv2.COLOR_BGR2LAB)


def lightness_slopes(px: np.ndarray) -> np.ndarray:
    """The least-squares slopes (2,) of a and b on L over Lab pixels (N, 3), in their dtype; zeros
    where L hardly varies (a flat patch has no tone to read)."""
    if len(px) < 2 or np.ptp(px[:, 0]) < 1:
        return np.zeros(2, px.dtype)
    light = px[:, 0] - px[:, 0].mean()
    return (light[:, None] * (px[:, 1:] - px[:, 1:].mean(axis=0))).sum(axis=0) / (light ** 2).sum()


def tone_of(target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """A target's (BGR uint8) colour of its own (the spread, MONOCHROME_SPREAD) and its tone: the
    median Lab (L, a, b; _lab) and the slopes of a and b with L."""
    step = SAMPLE_STEP if min(target.shape[:2]) >= 8 * SAMPLE_STEP else 1
    px = _lab(np.ascontiguousarray(target[::step, ::step])).reshape(-1, 3)
    median = np.median(px, axis=0)
    slope = lightness_slopes(px)
    off = px[:, 1:] - median[1:] - (px[:, :1] - median[0]) * slope
    distance = np.sqrt((off * off).sum(axis=1))
    k = min(len(distance) - 1, int(SPREAD_QUANTILE * len(distance)))
    return float(np.partition(distance, k)[k]), median, slope


def colour_weight(spread: float) -> float:
    """How much of a patch's own colour stays on a target of this spread: 0 monochrome, 1 colour."""
    low, high = MONOCHROME_SPREAD
    return float(np.clip((spread - low) / (high - low), 0.0, 1.0))


def keep_monochrome(image: np.ndarray, target: np.ndarray, same_place: bool = False) -> np.ndarray:
    """The patch ``image`` (BGR uint8) in the tone of ``target`` (BGR uint8: the target's pixels
    the patch was made from, any size) where the target is monochrome; ``image`` itself where the
    target has colour of its own. same_place: ``target`` is the very rectangle the patch covers
    (a "pixels" patch), whose pixels the patch left as they were stay bit for bit."""
    spread, median, slope = tone_of(target)
    weight = colour_weight(spread)
    if weight >= 1.0:
        return image
    lab = _lab(image)
    light = lab[..., 0] - median[0]
    for channel in (1, 2):
        tone = median[channel] + slope[channel - 1] * light
        lab[..., channel] = weight * lab[..., channel] + (1.0 - weight) * tone
    out = np.clip(np.round(cv2.cvtColor(lab, cv2.COLOR_LAB2BGR) * 255.0), 0, 255).astype(np.uint8)
    if same_place:
        unchanged = (image == target).all(axis=2)
        out[unchanged] = image[unchanged]
    return out


def patch_in_target_tone(patch, crop: np.ndarray, x: int = 0, y: int = 0) -> None:
    """keep_monochrome on a swap's patch (facepipe.media.patches.Patch), in place: ``crop`` is the
    target crop the swapper was given, at (x, y) in the frame for a "pixels" patch (which lies
    within it); an aligned crop's patch is read against the whole crop."""
    if patch.kind == "pixels":
        px, py = patch.x - x, patch.y - y
        h, w = patch.image.shape[:2]
        under = crop[max(py, 0):py + h, max(px, 0):px + w]
        if under.shape == patch.image.shape:
            patch.image = keep_monochrome(patch.image, under, same_place=True)
            return
    patch.image = keep_monochrome(patch.image, crop)
