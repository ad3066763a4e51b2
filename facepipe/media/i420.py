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

# A picture, or a part of one, is flat when its means over blocks of FLAT_BLOCK px span at most
# FLAT_RANGE grey levels (0-255): black, a fade, a flat wall or sky, a dark shot. Grain and
# compression noise average out in a block (a dark grainy shot spans 3 levels); anything about
# 30 px across with features of its own (what a detector can find) covers whole blocks and sets
# them tens of levels apart. The detectors skip what is flat.
FLAT_BLOCK = 8
FLAT_RANGE = 6
# flat_picture's first look: a picture whose samples every FLAT_PROBE px span more grey levels than
# this is not flat (grain does not reach that far); only a low-contrast one has its blocks measured.
FLAT_PROBE = 16
FLAT_PROBE_RANGE = 48


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


def block_means(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A uint8 plane averaged over a grid of size (w, h) blocks, as cv2.resize's INTER_AREA does.

    Where the grid cuts the plane into whole square blocks wider than 2 px (a 16:9 frame at a 16:9
    grid), the means come from the blocks' sums (cv2.reduce along the rows, then NumPy down the
    columns), rounded as OpenCV rounds them (the sum times the float reciprocal of the area, to
    the nearest level): its area resize reads such blocks through a table of pixel offsets,
    2.3 ms a 1080p luma plane at 32x18 blocks against 0.2 ms this way (a frame just decoded, not in
    the CPU's caches). The same bytes as OpenCV's (tests/test_i420.py: every square block from 3 to
    64 px, and 1080p, 720p and 4K planes); other grids are OpenCV's own resize (its 2x2 blocks round
    in integers, and some oblong ones sum in floats)."""
    w, h = size
    rows, cols = plane.shape
    fx, fy = cols // w, rows // h
    if fx * w != cols or fy * h != rows or fx != fy or fx <= 2 or not plane.flags.c_contiguous:
        return cv2.resize(plane, size, interpolation=cv2.INTER_AREA)
    row_sums = cv2.reduce(plane.reshape(rows * w, fx), 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S)
    sums = row_sums.reshape(h, fy, w).sum(axis=1)
    return np.rint(sums.astype(np.float32) * (np.float32(1) / np.float32(fx * fy))).astype(np.uint8)


def flatness(image: np.ndarray):
    """flat(x0, y0, x1, y1): whether that rectangle of the image (BGR, or one plane) is flat, the
    means of its blocks of FLAT_BLOCK px within FLAT_RANGE grey levels of each other."""
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    h, w = gray.shape
    means = cv2.resize(gray, (max(1, w // FLAT_BLOCK), max(1, h // FLAT_BLOCK)), interpolation=cv2.INTER_AREA)
    fy, fx = means.shape[0] / h, means.shape[1] / w

    def flat(x0: int, y0: int, x1: int, y1: int) -> bool:
        # Every block the rectangle touches, so a face at its edge counts.
        r0, c0 = int(y0 * fy), int(x0 * fx)
        blocks = means[r0:max(int(np.ceil(y1 * fy)), r0 + 1), c0:max(int(np.ceil(x1 * fx)), c0 + 1)]
        low, high, _, _ = cv2.minMaxLoc(blocks)
        return high - low <= FLAT_RANGE

    return flat


def flat_picture(image: np.ndarray) -> bool:
    """Whether the whole picture (BGR, or one plane) is flat (flatness), at the cost of a few
    samples for any picture with contrast."""
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    probe = np.ascontiguousarray(gray[::FLAT_PROBE, ::FLAT_PROBE])
    low, high, _, _ = cv2.minMaxLoc(probe)
    if high - low > FLAT_PROBE_RANGE:
        return False
    h, w = gray.shape
    return flatness(gray)(0, 0, w, h)
