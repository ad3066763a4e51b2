"""I420 (YUV 4:2:0, limited range) frames as the decoder gives them and the encoder takes them.

A frame is one uint8 array of h*3/2 rows of w bytes: the Y plane, then U, then V at half size.
Colour conversion is OpenCV's BT.601 both ways. Its I420 conversions give each 2x2 block of
pixels the block's own chroma sample, so converting a rectangle whose corners are even gives
exactly the pixels of converting the whole frame: stages convert only where faces are.
"""

from __future__ import annotations

import cv2
import numpy as np

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1


def split_i420(i420: np.ndarray, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the Y, U and V planes of an I420 array (h*3/2 rows of w bytes)."""
    flat = i420.reshape(-1)
    y = flat[: w * h].reshape(h, w)
    u = flat[w * h : w * h * 5 // 4].reshape(h // 2, w // 2)
    v = flat[w * h * 5 // 4 :].reshape(h // 2, w // 2)
    return y, u, v


def join_i420(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    h, w = y.shape
    return np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(h * 3 // 2, w)


def frame_size(i420: np.ndarray) -> tuple[int, int]:
    """(w, h) of an I420 array."""
    return i420.shape[1], i420.shape[0] * 2 // 3


def chroma_aligned(rect: Rect, w: int, h: int) -> Rect:
    """The rectangle widened to even corners (whole chroma samples), within the (even-sized) frame."""
    x0, y0, x1, y1 = rect
    return x0 - x0 % 2, y0 - y0 % 2, min(x1 + x1 % 2, w), min(y1 + y1 % 2, h)


def region_i420(planes, rect: Rect) -> np.ndarray:
    """A chroma-aligned rectangle of a frame given as (Y, U, V) planes, as an I420 array of its own."""
    y, u, v = planes
    x0, y0, x1, y1 = rect
    return join_i420(y[y0:y1, x0:x1], u[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2], v[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2])


def region_bgr(planes, rect: Rect) -> np.ndarray:
    """BGR pixels of a chroma-aligned rectangle of a frame given as (Y, U, V) planes."""
    return cv2.cvtColor(region_i420(planes, rect), cv2.COLOR_YUV2BGR_I420)


def write_region(planes, bgr: np.ndarray, rect: Rect) -> None:
    """Write BGR pixels back into a chroma-aligned rectangle of (Y, U, V) planes."""
    y, u, v = planes
    x0, y0, x1, y1 = rect
    ry, ru, rv = split_i420(cv2.cvtColor(np.ascontiguousarray(bgr), cv2.COLOR_BGR2YUV_I420), x1 - x0, y1 - y0)
    y[y0:y1, x0:x1] = ry
    u[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2] = ru
    v[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2] = rv


def bgr_to_yuv444(bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full-resolution Y, U and V of a BGR image, with exactly OpenCV's I420 coefficients.

    Converting the image doubled (each pixel a 2x2 block of itself) to I420 leaves one chroma
    sample per original pixel.
    """
    h, w = bgr.shape[:2]
    big = cv2.resize(bgr, (2 * w, 2 * h), interpolation=cv2.INTER_NEAREST)
    y, u, v = split_i420(cv2.cvtColor(big, cv2.COLOR_BGR2YUV_I420), 2 * w, 2 * h)
    return np.ascontiguousarray(y[::2, ::2]), u, v
