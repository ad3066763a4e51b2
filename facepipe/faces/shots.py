"""Shot changes, read from a thumbnail of every frame: where one shot ends and the next begins.

Detection keeps each frame's thumbnail (frame_thumbnail) in the segment's frames table, and looks
for a face on the frame beside one it was found on only within a shot (shot_difference); tracking
cuts no track across a shot change (shot_changes, at the job's ``shot_threshold``).
"""

from __future__ import annotations

import cv2
import numpy as np

from facepipe.media.tables import THUMB_SIZE


def frame_thumbnail(frame) -> bytes:
    """A THUMB_SIZE-square BGR thumbnail of a working frame: what shot changes are found from.

    Each of its pixels is a mean over its part of the frame (a bilinear step to an eighth of the
    frame, then an area average): a bilinear resize straight to THUMB_SIZE reads 2x2 pixels of each
    part (80x45 at 1080p), and on a pan the detail passing under those few samples read as shot
    changes (the benchmark clip's pan and zoom up to 37 where the threshold is 30, a fast pan across
    the astronaut's flag on every frame), which split a face's track at every one of them. The
    eighth costs 0.09 ms a 1080p frame, an area average of the whole frame 1 ms."""
    h, w = frame.shape
    step = (max(THUMB_SIZE, w // 16 * 2), max(THUMB_SIZE, h // 16 * 2))  # even, for the 4:2:0 planes
    return cv2.resize(frame.scaled_bgr(step), (THUMB_SIZE, THUMB_SIZE), interpolation=cv2.INTER_AREA).tobytes()


def thumbnail_hsv(thumbnail: bytes) -> np.ndarray:
    """A frame_thumbnail's pixels in HSV (OpenCV's full range: hue 0-255), float32."""
    img = np.frombuffer(thumbnail, np.uint8).reshape(THUMB_SIZE, THUMB_SIZE, 3)
    return cv2.cvtColor(img, cv2.COLOR_BGR2HSV_FULL).astype(np.float32)


def shot_difference(hsv: np.ndarray, before: np.ndarray) -> float:
    """The mean absolute HSV difference of two thumbnails (thumbnail_hsv), hue as an angle weighed by
    the lesser saturation (shot_changes says why)."""
    difference = np.abs(hsv - before)
    turn = np.minimum(difference[..., 0], 256 - difference[..., 0])
    difference[..., 0] = turn * np.minimum(hsv[..., 1], before[..., 1]) / 255
    return float(difference.mean())


def shot_changes(thumbnails: dict[int, bytes], threshold: float) -> list[int]:
    """Video frames that start a new shot (not frame 1): where the thumbnail's mean absolute
    HSV difference from the previous frame's reaches ``threshold`` (0 = never). Hue is an angle, and
    counts as far as the colour has one: red lies at both ends of its scale, and a red that moved
    across the end differs by what it moved (PySceneDetect's plain difference read up to 255 there:
    a pan across a red-striped flag scored 24 in hue where the turn was 8); a hue difference is
    weighed by the lesser saturation of the two pixels, as a greyish pixel's hue is noise (a pan
    over fine detail of mixed colours, whose averaged thumbnail is greyish, scored 31 on every
    frame, 21 weighed; the benchmark clip's cuts 91-95, 80-81 weighed)."""
    if threshold <= 0:
        return []

    cuts, before = [], None
    for frame in sorted(thumbnails):
        hsv = thumbnail_hsv(thumbnails[frame])
        if before is not None and before[0] == frame - 1 and shot_difference(hsv, before[1]) >= threshold:
            cuts.append(frame)
        before = (frame, hsv)
    return cuts
