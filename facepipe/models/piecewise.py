"""Piecewise-affine warps over a triangle mesh, in one remap: which triangle each pixel lies in,
each triangle's affine map, and the per-pixel maps they make. The swaps of pixels (the classic
swap's 68 landmarks, the mesh swap's 468 points) and the occlusion mask's canonical canvas all warp
this way."""

from __future__ import annotations

import cv2
import numpy as np


def signed_areas(p: np.ndarray) -> np.ndarray:
    """Twice the signed area of each triangle (n, 3, 2)."""
    a, b = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    return a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]


def triangle_affines(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The affine maps (n, 2, 3, float32) taking each triangle of src (n, 3, 2) onto the one of dst.
    A degenerate src triangle (its corners on one line: a mesh's points squashed together, as a face
    partly out of the frame had when they were clipped onto the frame's edge) gets an all-zero map,
    where a solver would stop the job with a singular matrix; nearly degenerate ones get the huge
    values that they imply.

    Solved in closed form from each triangle's two edges: the mesh swap and the occlusion mask ask
    for ~800 maps at a time, several times a face, and NumPy's batched solver took 0.22 ms a call
    where this takes 0.08 ms, for the same float32 values."""
    src = src.astype(np.float64)
    dst = dst.astype(np.float64)
    # The linear part takes src's edges (u = p1 - p0, v = p2 - p0) onto dst's (du, dv): it is
    # [du dv] times the inverse of [u v], written out (NumPy's small-array calls cost more than the
    # arithmetic); the shift then takes p0 onto q0.
    (ux, uy), (vx, vy) = (src[:, 1] - src[:, 0]).T, (src[:, 2] - src[:, 0]).T
    (dux, duy), (dvx, dvy) = (dst[:, 1] - dst[:, 0]).T, (dst[:, 2] - dst[:, 0]).T
    det = ux * vy - uy * vx
    degenerate = det == 0
    maps = np.empty((len(src), 2, 3), np.float64)
    with np.errstate(all="ignore"):  # (nearly degenerate: inf and nan, as a solver gives them)
        scale = 1.0 / np.where(degenerate, 1.0, det)
        for row, (du, dv) in enumerate(((dux, dvx), (duy, dvy))):
            maps[:, row, 0] = (du * vy - dv * uy) * scale
            maps[:, row, 1] = (dv * ux - du * vx) * scale
            maps[:, row, 2] = dst[:, 0, row] - maps[:, row, 0] * src[:, 0, 0] - maps[:, row, 1] * src[:, 0, 1]
    maps[degenerate] = 0.0
    return maps.astype(np.float32)


def triangle_ids(corners: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Which triangle (index into corners: n x 3 x 2, int32 pixels) each pixel of an image of this
    shape lies in, -1 outside them all; drawn in order, so a later triangle owns the pixels it
    shares with an earlier one (an edge, or an overlap where the mesh folds)."""
    ids = np.full(shape, -1, dtype=np.int32)
    for k in range(len(corners)):  # the swap's hottest loop: the corners are rounded by the caller at once
        cv2.fillConvexPoly(ids, corners[k], k)
    return ids


def piecewise_maps(affines: np.ndarray, tri_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The maps (x, y) of a piecewise-affine warp over an image of tri_id's shape: at each pixel the
    affine map (n, 2, 3) of its triangle (tri_id; -1: the last map). Each coefficient is gathered
    as a plane of its own (a gather of whole 2x3 maps, read back a coefficient at a time, strides
    through all six)."""
    # The pixels' coordinates as a row and a column: the products below broadcast them.
    xs = np.arange(tri_id.shape[1], dtype=np.float32)[None, :]
    ys = np.arange(tri_id.shape[0], dtype=np.float32)[:, None]
    # One np.take for all six (indexing each row with tri_id converted the index six times).
    c = np.take(np.ascontiguousarray(affines.reshape(-1, 6).T), tri_id, axis=1)
    return c[0] * xs + c[1] * ys + c[2], c[3] * xs + c[4] * ys + c[5]
