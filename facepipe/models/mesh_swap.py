"""The offline backend's swap over MediaPipe's dense face mesh (468 points, facepipe.models.face_mesh).

For each target face:

1. **Shape.** The target's mesh is moved towards the source's proportions (``shape_transfer``,
   0-100): the source is laid on the target by the affine map that best fits their upper faces,
   each half of the face is scaled to the target's half-width (a turned face's far half is
   foreshortened more than its near one), and a share of the source-minus-target offset of each
   point is added to the target's, fading to none at the face oval (the target's head outline).
   The eyes move as a whole and the lips only by their corners' shift and width, so the target's
   blinks and mouth opening (its expression) are kept; the move fades out as either face turns
   away, and is halved until no triangle folds over.
2. **Warp.** The source face is warped onto the (moved) target mesh piecewise-affinely over the
   mesh's canonical triangulation (852 triangles, facepipe/models/data/face_mesh_triangles.txt, wound
   consistently at load). A triangle that faces away in the source is filled from its mirror image
   on the source's other half (facepipe/models/data/face_mesh_mirror.txt); one that faces away in the
   target, or in the source on both halves, and any pixel whose map lands outside the source's
   visible face, keep the target's own pixels (alpha 0): nothing from an empty part of the warp
   reaches the result. Near the oval, what is clearly not skin in either face (hair, background
   where the oval runs past a turned face's outline) also keeps the target's pixels. Where the
   source sees a triangle much worse than the target does (a strongly turned source's far cheek
   and nose flank, squeezed into slivers; or a folded triangle, whose mirror fill is the other
   cheek's light), the paste fades to the target's own pixels (VIEW_POOR): the mirror fill then
   only shows in that fade's soft edge.
3. **Regions.** The face inside its oval (its forehead pulled down to above the brows, but
   reaching BROW_MARGIN around each brow, so the source's whole brows come over) is the source's,
   lids, lashes, brows and lips included, warped onto the target's moving mesh; the inside of each
   eye's lid contour (iris, sclera) and the mouth's opening (teeth, the dark inside) are the
   target's own pixels, moved with the mesh, so its gaze, blinks, expression and speech are kept.
   Above the brows only what is skin in both faces is pasted (no fringe edge comes over as an
   arc); around them the target's own brows are covered wherever its mesh placed them (on a face
   turned less than BROW_MAX_TURN; one turned further keeps its own brows).
4. **Light and tone** (relight). The target's local mean colour (a masked Gaussian mean in Lab
   over its skin, a sixth of the face wide) plus the source's lightness over its own local mean,
   shades and highlights softly compressed, each shade in the colour the target's own shaded skin
   has (shade_slope), plus the source's colour detail: the source's texture without its light and
   colour cast, on the target's skin tone and saturation. The source's lips keep their own
   lightness and colour over its skin, its brows their darkness and saturation in the target
   skin's hue. The skin's relief (folds, a cheek's shading) is scaled to the target's own contrast
   (relief_gain): on a washed-out face the source's smile folds would read as brown streaks. On a
   target whose skin is darker than the source's (a dim room, a night scene) all of the source's
   shades, highlights and colours over its skin come over at the target's light (the ratio of the
   two skins' L* + 16): at full depth they made white blotches and red streaks on a dim face. On
   an overexposed target the skin's hue is read where it is not clipped (clipped_skin), its
   saturation from all of it: a clipped pixel reads as a greenish yellow (green brows, cyan patches).
   Around the eyes the light also follows at a lid's scale (FINE_LIGHT_SCALE): the target's lid
   shade (a squint's crease) stays, the source's lit lids go. A black-and-white or sepia source
   photo has no colour to bring (facepipe.media.tone): its brows take the target skin's colour
   and its lips the target's own lips' (a black-and-white target is kept monochrome after the
   swap, facepipe.swap.segment).
5. **Sharpness.** The warped source is blurred to the target's own blur (blur_sigma, Zhuo & Sim).
6. **Blend.** Gradient-domain: the harmonic (Poisson) correction that makes the pasted face equal
   the target along the paste's border, read from skin only (OpenCV's seamlessClone of the border
   difference over a flat image), then a feathered alpha inside the face oval: every pixel outside
   the oval is bit-identical to the input. Around a hole inside the oval the ramp is wider.

The source needs, from facepipe.faces.embedding's record, ``source_crop`` and ``source_landmarks``
(its 468 mesh points in the crop).
"""

from __future__ import annotations

import logging
from collections import deque
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from facepipe.media.tone import colour_weight, lightness_slopes, tone_of
from facepipe.models.classic_swap import PixelSwapper, SwapError, blended_patch, hull_bbox, source_image
from facepipe.models.piecewise import piecewise_maps, signed_areas, triangle_affines, triangle_ids

log = logging.getLogger(__name__)

NUM_POINTS = 468
TRIANGLES_FILE = Path(__file__).with_name("data") / "face_mesh_triangles.txt"
MIRROR_FILE = Path(__file__).with_name("data") / "face_mesh_mirror.txt"

# Closed contours of the mesh (MediaPipe's FACEMESH_FACE_OVAL, _LEFT_EYE, _RIGHT_EYE, the outer loop
# of FACEMESH_LIPS and the two eyebrows, in order; tests/test_mesh.py uses them).
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
EYE_IMAGE_LEFT = [33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7]
EYE_IMAGE_RIGHT = [263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249]
LIPS_OUTER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146]
# The inner loop of FACEMESH_LIPS: the mouth's opening (teeth, tongue, the dark inside).
LIPS_INNER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95]
BROW_IMAGE_LEFT = [70, 63, 105, 66, 107, 55, 65, 52, 53, 46]
BROW_IMAGE_RIGHT = [300, 293, 334, 296, 336, 285, 295, 282, 283, 276]
# Their upper edges, from the face's side to its middle.
BROW_UPPER_LEFT = [70, 63, 105, 66, 107]
BROW_UPPER_RIGHT = [300, 293, 334, 296, 336]
# The mesh's points on and inside the outer lip contour (read off a frontal face's mesh: the
# topology's, the same in every face).
LIPS = [0, 11, 12, 13, 14, 15, 16, 17, 37, 38, 39, 40, 41, 42, 61, 62, 72, 73, 74, 76, 77, 78, 80, 81, 82, 84,
        85, 86, 87, 88, 89, 90, 91, 95, 96, 146, 178, 179, 180, 181, 183, 184, 185, 191, 267, 268, 269, 270, 271,
        272, 291, 292, 302, 303, 304, 306, 307, 308, 310, 311, 312, 314, 315, 316, 317, 318, 319, 320, 321, 324,
        325, 375, 402, 403, 404, 405, 407, 408, 409, 415]
MOUTH_CORNERS = (61, 291)
# The midline, top of the forehead to the chin (each mirrors itself); the nose tip and the oval's
# points level with it on either side (how far the face is turned).
MIDLINE = [10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 164, 0, 11, 12, 13, 14, 15, 16, 17, 18, 200, 199,
           175, 152]
NOSE_TIP, CHEEK_IMAGE_LEFT, CHEEK_IMAGE_RIGHT = 1, 234, 454
CHIN, FOREHEAD_TOP = 152, 10
# The oval's points above the brows, and how far (share of the way) they are pulled towards the
# mid-brow point 9: the upper forehead is often hair (a fringe) in the source or the target, and
# pasting it gives a band of the wrong texture.
FOREHEAD = [389, 251, 284, 332, 297, 338, 10, 109, 67, 103, 54, 21, 162]
MID_BROW = 9
FOREHEAD_PULL = 0.45
# Pulled that far, the oval's top cuts through the brows' outer ends; the pasted face reaches this
# far (share of the face width) beyond each brow, within the oval, so the source's whole brows
# (which carry much of its identity) come over without the forehead above them.
BROW_MARGIN = 0.06
# The face's turn (turn_of) from which the oval no longer reaches around the brows: on a face turned
# further the mesh places the far brow too roughly, and the target's and the source's brows would
# both show.
BROW_MAX_TURN = 0.5

# Feathering width as a share of the face width: with the Poisson correction the border has
# nothing left to hide, so this only softens where the border runs over hair or background.
FEATHER = 0.03
# The ramp around a hole inside the oval (an empty part of the warp), as a share of the face width.
HOLE_FEATHER = 0.05
# How well the source sees each triangle (_views): the share of the view of a triangle's best-seen
# side (it or its mirror image) that it has, in the source over in the target. A strongly turned
# source (t1's near-profile faces) squeezes its far cheek and the side of its nose into slivers the
# mesh still calls visible; warped up to the target's size they are the silhouette, the nose's lit
# flank or the background smeared out: a jagged white or orange patch that no relighting matches.
# Under VIEW_POOR the target keeps its own pixels, from VIEW_GOOD on the source's are pasted, with a
# ramp between, smoothed over VIEW_FEATHER of the face width so no triangle's edge shows. A frontal
# source, or a target turned as far as the source, is untouched (the share is 1 or more). Higher
# bounds (0.4, 0.8) also take out a faint line left along the fade on t1's near-profile faces, but
# fade more of the moderately turned ones (t1's faces 4 and 6): identity_benchmark's median went
# from 0.621 to 0.636 (0.630 with these).
VIEW_POOR, VIEW_GOOD = 0.35, 0.7
VIEW_FEATHER = 0.06
# How far the kept eyes and mouth reach beyond their contours (negative: short of them), as a share
# of the face width. The target keeps what moves with its gaze and speech and is not the source's
# look: the inside of each eye's lid contour (iris, sclera) and the mouth's opening (teeth, the
# dark inside); the lids, lashes and lips are the source's, warped onto the target's (moving)
# mesh, so the expression, which is the mesh's geometry, stays the target's.
EYE_MARGIN = -0.01
MOUTH_MARGIN = 0.0
# What is darker than this share of the skin's lightness around the lips is the inside of the mouth
# (_mouth_cavity), kept as the target's.
CAVITY_SHARE = 0.35
# How far beyond the outer lip contour (share of the face width) it is looked for.
CAVITY_REACH = 0.06
# The kept regions' soft edge, as a share of the face width.
KEEP_FEATHER = 0.015
# The Gaussian of the light and tone transfer, as a share of the face width: coarse enough to
# leave the source's features (its nose's and cheekbones' relief) alone, fine enough to take out
# the shading of its own light (a shadow down a cheek) and to follow the target's.
LIGHT_SIGMA = 1 / 6
# The source's own mean is read at half that Gaussian: the shading of its light at the scale of a
# cheek (a hollow under a cheekbone lit from one side) goes too; on a target lit otherwise, stretched
# over a differently shaped cheek, it reads as a flat brown smudge.
SOURCE_LIGHT_SCALE = 0.5
# The most a brow's hair is more saturated than the skin (its chroma over the skin's): ginger brows
# stay ginger, and a stray pixel of the source's lips or makeup is not painted on.
BROW_CHROMA_MAX = 1.5
# Around the eyes (periocular) the means also follow the light at this share of the Gaussian (the
# source's lit parts out, the target's shade in: relight): the lids' light there is the target's
# expression (a squint's or a laugh's creases and shadow under the brow), and
# an open-eyed source's lit lids, stretched over it, read as pale arcs around the eyes.
FINE_LIGHT_SCALE = 0.2
# The periocular zone: each eye's contour and its brow's, joined (their convex hull) and grown by
# this share of the face width, with a soft edge as wide.
PERIOCULAR_MARGIN = 0.04
# The source skin's relief is scaled to the target's contrast (relief_gain): the spread between
# these quantiles of each face's lightness over its local mean (at the source's light scale), and
# the least share kept. On t1.jpg's washed-out faces (the turned woman and man: the target's spread
# is a quarter to a third of the astronaut's) the astronaut's smile folds and cheek shading came
# over as brown streaks at full depth.
RELIEF_QUANTILE = 0.1
RELIEF_GAIN_MIN = 0.5
# The range (Lab a and b) the source's own colour detail (its a and b over their local means:
# freckles, a flush) is softly compressed into: more of it and a source's ginger brows, red lip
# line or hair strand lands on the target's skin as an orange or blue smudge.
COLOUR_RANGE = 4.0
# The ranges (Lab lightness, 0-255) the source skin's shades, and its highlights, are softly
# compressed into: a highlight is the source's light (a shine on its cheek), and on a target
# already lit brightly it would burn out to a flat white patch.
SHADE_RANGE = 80.0
HIGHLIGHT_RANGE = 20.0
# Lab's L* + 16 on OpenCV's 8-bit lightness scale (L* x 255 / 100): relight's light ratio.
_L16 = 16 * 255 / 100
# The masked means are taken on an image shrunk so that the Gaussian is this many pixels (the
# result is smooth at that scale, and it keeps the swap's time).
_LIGHT_SIGMA_PX = 3.0
# The weight of the whole mask's mean in a masked mean (_masked_mean): it only shows where the mask
# is this sparse or sparser within reach of the Gaussian.
_FAR = 1e-3
# A target pixel with a channel at this level or above is clipped (clipped_skin), and its colour
# is not read where more than this share of the skin is.
CLIPPED, CLIPPED_SHARE = 250, 0.02
# Skin: a pixel of the face whose Lab chroma lies this many robust spreads (within the limits)
# from the face's median, or its lightness this far, is not skin (hair, background, a shadowed
# ear).
SKIN_SPREADS = 3.0
SKIN_CHROMA_LIMITS = (12.0, 25.0)
SKIN_LIGHT_LIMITS = (50.0, 90.0)
# How far inside the oval (share of the face width) the skin's colour is read, and everything is
# taken for face.
SKIN_CORE = 0.12
# A source's fringe: its hair over the forehead, reaching in from the hairline, and its tips within
# this much of it (share of the face width) that are darker than the skin by this much (Lab
# lightness, 0-255). A fringe's edge shades into the skin over a few pixels that a colour test lets
# through: pasted, it read as a brown smudge above the brows of a turned face (the astronaut's
# fringe on t1.jpg's laughing man). There, on the forehead, the target keeps its own pixels.
FRINGE_MARGIN = 0.04
FRINGE_TIP_DARKER = 10.0
# Shape transfer: the default strength (0-100; see the README), how far in from the oval (share
# of the face width) the offset fades in, the largest move (share of the face width), and the
# face's turn (1 - near/far cheek distance ratio) at which it fades out entirely.
SHAPE_TRANSFER = 70
SHAPE_FADE = 0.12
SHAPE_MAX_MOVE = 0.08
SHAPE_MAX_TURN = 0.9
# The feather's Gaussian on a defocused face, over the target's estimated blur: the ramp is a
# Gaussian cut at 2 sigma (kernel 2k+1), which reads sharper than a Gaussian edge of the same sigma.
# With a gain of 1 the pasted skin of t1's faces read 10-30% less blurred than the target's at a
# defocus of 3 px (blur_sigma).
RAMP_GAIN = 1.3
# Sharpness search: Gaussian sigmas tried (px), finest first.
_SIGMAS = np.concatenate([[0.0], np.geomspace(0.3, 12.0, 24)])


def _orient(tris: np.ndarray) -> np.ndarray:
    """The triangles with one winding across the mesh (the vendored list has none: it is the edge
    list's 3-cliques): across each shared edge the two triangles run the edge in opposite
    directions, so in any view the triangles that face the camera all have one sign of area."""
    tris = tris.copy()
    by_edge: dict[frozenset, list[int]] = {}
    for i, t in enumerate(tris):
        for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
            by_edge.setdefault(frozenset((int(a), int(b))), []).append(i)
    done = np.zeros(len(tris), bool)
    for seed in range(len(tris)):
        if done[seed]:
            continue
        done[seed] = True
        queue = deque([seed])
        while queue:
            t = tris[queue.popleft()]
            for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
                for j in by_edge[frozenset((int(a), int(b)))]:
                    if done[j]:
                        continue
                    u = list(tris[j])
                    if u[(u.index(a) + 1) % 3] == b:  # runs a -> b as t does: flip it
                        tris[j] = tris[j][::-1]
                    done[j] = True
                    queue.append(j)
    return tris


@lru_cache(maxsize=1)
def triangles() -> np.ndarray:
    """The mesh's canonical triangles, (852, 3) vertex indices, consistently wound (_orient)."""
    rows = [line.split() for line in TRIANGLES_FILE.read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    tris = np.array(rows, dtype=np.int32)
    if tris.ndim != 2 or tris.shape[1] != 3 or tris.min() < 0 or tris.max() >= NUM_POINTS:
        raise SwapError(f"{TRIANGLES_FILE} is not a list of face-mesh triangles")
    return _orient(tris)


@lru_cache(maxsize=1)
def mirror_map() -> np.ndarray:
    """The mesh's left-right correspondence: entry i is the vertex that mirrors vertex i."""
    rows = [line for line in MIRROR_FILE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    mirror = np.array(rows, dtype=np.int64)
    if mirror.shape != (NUM_POINTS,) or not np.array_equal(mirror[mirror], np.arange(NUM_POINTS)):
        raise SwapError(f"{MIRROR_FILE} is not the face mesh's left-right correspondence")
    return mirror


def mirror_map_of(points: np.ndarray) -> np.ndarray:
    """The left-right correspondence read off one frontal face's mesh (how MIRROR_FILE was made):
    the mesh reflected about the line fitted through its midline points, then matched one-to-one to
    its own points by least total distance."""
    # lazy: SciPy is slow to import, and only this path needs it
    from scipy.optimize import linear_sum_assignment

    p = np.asarray(points, np.float64).reshape(NUM_POINTS, 2)
    p = p - p[MIDLINE].mean(axis=0)
    axis = np.linalg.svd(p[MIDLINE])[2][0]
    normal = np.array([-axis[1], axis[0]])
    reflected = p - 2 * (p @ normal)[:, None] * normal
    return linear_sum_assignment(np.linalg.norm(reflected[:, None] - p[None], axis=2))[1]


def _points(landmarks, what: str) -> np.ndarray:
    pts = np.asarray(landmarks, dtype=np.float32)
    if pts.size != 2 * NUM_POINTS or not np.isfinite(pts).all():
        raise SwapError(f"{what} has {pts.size // 2} landmarks, not the face mesh's {NUM_POINTS} finite points; "
                        f"the mesh swapper needs a faces table and source made with backend=offline")
    return pts.reshape(NUM_POINTS, 2)


def _poly_mask(points: np.ndarray, idx: list[int], shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(points[idx]).astype(np.int32)], 255)
    return mask


def pieces_touching(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The 8-connected pieces of a mask (bool) that have a pixel in ``seed`` (bool), whole."""
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    touched = np.zeros(count, bool)
    touched[labels[seed & mask]] = True
    touched[0] = False
    return touched[labels]


def sharpness(gray: np.ndarray, mask: np.ndarray) -> float:
    """Variance of the Laplacian over a mask: the measure of sharpness used to match and to test."""
    lap = cv2.Laplacian(gray.astype(np.float32), cv2.CV_32F, ksize=3)
    vals = lap[mask]
    return float(vals.var()) if vals.size > 16 else 0.0


# Blur estimation (Zhuo & Sim's gradient-ratio defocus estimate): the re-blur applied (px), and the
# share of the region's strongest gradients, at their local maxima, that it is read at.
_REBLUR = 1.0
_EDGE_SHARE = 0.10


def _gradient(gray: np.ndarray, magnitude: bool = True) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    gx, gy = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    # OpenCV's magnitude (the square root of the sum of squares, vectorised): np.hypot calls the C
    # library once per pixel and took 3% of the offline swap's CPU (perf samples).
    return (cv2.magnitude(gx, gy) if magnitude else None), gx, gy


def _edge_peaks(mag: np.ndarray, gx: np.ndarray, gy: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Which of the pixels (ys, xs) are maxima of the gradient magnitude across the edge (non-maximum
    suppression along the gradient's direction, quantised to 45 degrees, as Canny's; beyond the
    image's edge its edge pixels repeat). Only these pixels are read: blur_sigma's candidates are a
    tenth of the region."""
    angle = (np.round(np.arctan2(gy[ys, xs], gx[ys, xs]) / (np.pi / 4)).astype(int)) % 4
    dy, dx = _PEAK_STEPS[angle].T
    h, w = mag.shape
    here = mag[ys, xs]
    fwd = mag[np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)]
    bwd = mag[np.clip(ys - dy, 0, h - 1), np.clip(xs - dx, 0, w - 1)]
    return (here >= fwd) & (here >= bwd)


# The neighbour's step (dy, dx) across an edge for each quantised gradient direction (0, 45, 90, 135
# degrees).
_PEAK_STEPS = np.array([(0, 1), (1, 1), (1, 0), (1, -1)])


def _top_share_floor(values: np.ndarray, share: float) -> float:
    """The smallest of the values at or above np.quantile(values, 1 - share) (linear
    interpolation): ``values >= it`` picks the same values as ``values >= that quantile`` (between
    two neighbouring sorted values the quantile lies strictly above the lower one), from one
    partial sort instead of np.quantile's checks, copies and interpolation (a quarter of a blur
    estimate's time)."""
    index = (values.size - 1) * (1 - share)
    k = min(int(np.ceil(index)), values.size - 1)
    return np.partition(values, k)[k]


def blur_sigma(gray: np.ndarray, mask: np.ndarray) -> float:
    """The Gaussian blur (px) of the edges over a mask, after Zhuo & Sim ("Defocus map estimation
    from a single image", 2011): at an edge blurred by s, re-blurring by s0 divides the gradient by
    R = sqrt(s^2 + s0^2) / s, so s = s0 / sqrt(R^2 - 1). It is read at the region's strongest
    gradients (local maxima) and the median taken: a ratio, so the edges' contrast (stubble, a
    dark brow, make-up) cancels, which the Laplacian's variance counts. 0 where there are no edges."""
    return _blur_sigma_at(gray, *_pixels_of(mask))


def _pixels_of(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A mask's pixels as np.nonzero gives them (rows, columns) and as flat indices."""
    return (*np.nonzero(mask), np.flatnonzero(mask))


def _blur_sigma_at(gray: np.ndarray, ys: np.ndarray, xs: np.ndarray, flat: np.ndarray) -> float:
    """blur_sigma over the mask's pixels (_pixels_of it: rows, columns, flat indices), for a caller
    that reads one region's blur on several images (match_sharpness)."""
    g = gray.astype(np.float32)
    m1, gx, gy = _gradient(g)
    vals = m1.reshape(-1)[flat]  # a flat index: a fifth of the time of the (row, column) pair
    if vals.size < 16:
        return 0.0
    strong = (vals >= _top_share_floor(vals, _EDGE_SHARE)) & (vals > 1.0)
    ys, xs = ys[strong], xs[strong]
    peak = _edge_peaks(m1, gx, gy, ys, xs)
    ys, xs = ys[peak], xs[peak]
    # The re-blurred gradient is read at those pixels only.
    _, bx, by = _gradient(cv2.GaussianBlur(g, (0, 0), _REBLUR), magnitude=False)
    r = m1[ys, xs] / np.maximum(np.hypot(bx[ys, xs], by[ys, xs]), 1e-6)
    r = r[r > 1.001]
    if r.size < 8:
        return 0.0
    return _median(_REBLUR / np.sqrt(r ** 2 - 1))


def _median(values: np.ndarray) -> float:
    """np.median of a 1-D array (the same value) from one partial sort, without its checks and
    copies: blur_sigma reads one a few times a face."""
    n = values.size
    middle = np.partition(values, [(n - 1) // 2, n // 2])
    return float(middle[n // 2] if n % 2 else middle[n // 2 - 1 : n // 2 + 1].mean())


def match_sharpness(warped: np.ndarray, target: np.ndarray, region: np.ndarray,
                    goal: float | None = None) -> tuple[np.ndarray, float]:
    """The warped face blurred to the target's blur over ``region`` (blur_sigma; ``goal``: that blur
    where the caller has it already), and the sigma used (the smallest tried that makes it at least
    as blurred as the target's; 0 when it already is)."""
    w_gray = cv2.cvtColor(warped, cv2.COLOR_BGR2GRAY)
    at = _pixels_of(region)
    if goal is None:
        goal = _blur_sigma_at(cv2.cvtColor(target, cv2.COLOR_BGR2GRAY), *at)
    prev_sigma, prev_b = 0.0, _blur_sigma_at(w_gray, *at)
    if prev_b >= goal or goal <= 0:
        return warped, 0.0

    def blur_at(i: int) -> float:
        return _blur_sigma_at(np.round(cv2.GaussianBlur(w_gray, (0, 0), float(_SIGMAS[i]))), *at)

    # The first sigma whose blur reaches the goal, found by bisection (the estimated blur grows with
    # the sigma), starting from the two sigmas around the one that Gaussian blurs composing would
    # need (sqrt(goal^2 - blur^2)): mostly two estimates, instead of one per sigma tried.
    lo, hi, found = 0, len(_SIGMAS), {0: prev_b}  # blur at lo is under the goal; at hi (if any) not
    guess = int(np.searchsorted(_SIGMAS, np.sqrt(goal ** 2 - prev_b ** 2)))
    for mid in (guess, guess - 1):
        if lo < mid < hi:
            found[mid] = blur_at(mid)
            lo, hi = (mid, hi) if found[mid] < goal else (lo, mid)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        found[mid] = blur_at(mid)
        lo, hi = (mid, hi) if found[mid] < goal else (lo, mid)
    if hi == len(_SIGMAS):
        sigma = float(_SIGMAS[-1])  # softer than the softest tried: that one
    else:
        # Between the last sigma under the goal and the first over it, interpolated linearly in the
        # estimated blur.
        prev_sigma, prev_b = float(_SIGMAS[lo]), found[lo]
        b = found[hi]
        t = (goal - prev_b) / max(b - prev_b, 1e-9)
        sigma = prev_sigma + float(t) * (float(_SIGMAS[hi]) - prev_sigma)
    if sigma <= 0.05:
        return warped, 0.0
    return cv2.GaussianBlur(warped, (0, 0), float(sigma)), float(sigma)


class _MaskWeights:
    """A mask as a masked mean's weights (float32), and their shrunk, blurred copies by sigma: the
    means of several images over one mask share them (_MaskedMeans)."""

    def __init__(self, mask: np.ndarray):
        self.weights = mask.astype(np.float32)
        self.count = cv2.countNonZero(self.weights)
        self._blurred: dict[float, tuple] = {}

    def at(self, sigma: float) -> tuple[float, np.ndarray]:
        """(scale, the weights shrunk by scale and blurred by sigma * scale) for a mean at sigma."""
        if sigma not in self._blurred:
            h, w = self.weights.shape
            scale = min(1.0, _LIGHT_SIGMA_PX / max(sigma, 1e-6))
            den = self.weights
            if scale < 1.0:
                den = cv2.resize(den, (max(1, round(w * scale)), max(1, round(h * scale))),
                                 interpolation=cv2.INTER_AREA)
            self._blurred[sigma] = scale, cv2.GaussianBlur(den, (0, 0), sigma * scale)
        return self._blurred[sigma]


class _MaskedMeans:
    """Gaussian means of an image (float, h x w x c) over a mask (normalised convolution) at any
    sigma, each taken on a copy shrunk so the Gaussian is _LIGHT_SIGMA_PX pixels (the mean is
    smooth at that scale). The masked image and the whole mask's mean are made once: the
    relighting reads a face's means at two or three scales."""

    def __init__(self, img: np.ndarray, mask: np.ndarray | _MaskWeights):
        self.mask = mask if isinstance(mask, _MaskWeights) else _MaskWeights(mask)
        m = self.mask.weights
        # The masked image as one per-element product in OpenCV (the same values as NumPy's broadcast
        # product, in a quarter of the time).
        channels = img.shape[-1]
        if channels == 1:
            self.num = cv2.multiply(np.ascontiguousarray(img[..., 0]), m)[..., None]
        else:
            self.num = cv2.multiply(np.ascontiguousarray(img), cv2.merge([m] * channels))
        # The whole mask's mean from the masked sums (C, double accumulation): indexing img by the mask
        # was 40% of the mean's time.
        count = self.mask.count
        self.whole = (np.array(cv2.sumElems(self.num)[:channels], np.float64) / count if count
                      else np.zeros(channels)).astype(np.float32)

    def at(self, sigma: float) -> np.ndarray:
        """The mean at sigma (h x w x c)."""
        h, w = self.mask.weights.shape
        scale, den = self.mask.at(sigma)
        num = self.num
        if scale < 1.0:
            num = cv2.resize(num, (den.shape[1], den.shape[0]), interpolation=cv2.INTER_AREA)
        num = cv2.GaussianBlur(num, (0, 0), sigma * scale).reshape(den.shape + (-1,))
        # Far from every pixel of the mask (beyond the Gaussian's kernel) both sums are zero: there the
        # mean is the whole mask's, not zero (in Lab, black with a strong blue-green cast).
        mean = (num + _FAR * self.whole) / (den + _FAR)[..., None]
        if scale < 1.0:
            mean = cv2.resize(mean, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, -1)
        return mean


def _masked_mean(img: np.ndarray, mask: np.ndarray | _MaskWeights, sigma: float) -> np.ndarray:
    """Gaussian mean of img (float, h x w x c) over mask only at sigma (_MaskedMeans)."""
    return _MaskedMeans(img, mask).at(sigma)


class SkinModel:
    """The colour of a face's skin in Lab: the median and robust spread over a region (the face
    less its eyes, brows and mouth); ``of`` tells which pixels of an image are skin by it."""

    def __init__(self, lab: np.ndarray, region: np.ndarray):
        # A row per channel: the medians then partition contiguous rows.
        px = np.ascontiguousarray(lab[region][::4].T)
        self.median = np.median(px, axis=1)
        spread = 1.4826 * np.median(np.abs(px - self.median[:, None]), axis=1)
        self.chroma = float(np.clip(SKIN_SPREADS * np.hypot(spread[1], spread[2]), *SKIN_CHROMA_LIMITS))
        self.light = float(np.clip(SKIN_SPREADS * spread[0], *SKIN_LIGHT_LIMITS))

    def of(self, lab: np.ndarray, strict: bool = False) -> np.ndarray:
        """Which pixels are skin; ``strict``: only those close to the median (the lower limits),
        where a difference to the skin can be trusted."""
        return self.both(lab)[1 if strict else 0]

    def both(self, lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """of(lab) and of(lab, strict=True), from one reading of each pixel's distance to the median."""
        # Squared distances against squared limits: the same test without a square root per pixel.
        da, db = lab[..., 1] - self.median[1], lab[..., 2] - self.median[2]
        chroma2 = da * da + db * db
        light = np.abs(lab[..., 0] - self.median[0])
        return ((chroma2 <= self.chroma ** 2) & (light <= self.light),
                (chroma2 <= SKIN_CHROMA_LIMITS[0] ** 2) & (light <= SKIN_LIGHT_LIMITS[0]))


def skin_core(oval: np.ndarray, face_w: float) -> np.ndarray:
    """The oval (uint8) eroded by SKIN_CORE of the face's width: where its skin's colour is read."""
    r = max(1, int(round(SKIN_CORE * face_w)))
    return cv2.erode(oval, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2))


def source_fringe(img: np.ndarray, pts: np.ndarray, regions: tuple[np.ndarray, ...]) -> np.ndarray:
    """A source face's fringe (bool, on its image): the pixels of its forehead band (regions:
    MeshSwapper._regions of its mesh) that are darker than its skin and not skin by the looser test,
    in pieces that reach the band's edge from the hairline; and its tips, the band's pixels within
    FRINGE_MARGIN of it darker than the skin by FRINGE_TIP_DARKER."""
    oval, _, band, _ = regions
    inner = band > 0
    if not inner.any():
        return np.zeros(img.shape[:2], bool)
    face_w = float(pts[:, 0].max() - pts[:, 0].min())
    lab = cv2.cvtColor(img, cv2.COLOR_BGR2LAB).astype(np.float32)
    features = (_poly_mask(pts, EYE_IMAGE_LEFT, img.shape[:2]) | _poly_mask(pts, EYE_IMAGE_RIGHT, img.shape[:2])
                | _poly_mask(pts, BROW_IMAGE_LEFT, img.shape[:2]) | _poly_mask(pts, BROW_IMAGE_RIGHT, img.shape[:2])
                | _poly_mask(pts, LIPS_OUTER, img.shape[:2]))
    centre = (skin_core(oval, face_w) > 0) & (features == 0)
    if centre.sum() < 16:
        return np.zeros(img.shape[:2], bool)
    skin = SkinModel(lab, centre)
    # Not skin, and darker than it: hair (a highlight on the forehead is lighter).
    hair = inner & ~skin.both(lab)[0] & (lab[..., 0] < skin.median[0])
    # The band's edge along the oval (the hairline's side): hair reaching it hangs from the hairline.
    edge = inner & (cv2.erode(oval, np.ones((3, 3), np.uint8)) == 0)
    fringe = pieces_touching(hair, cv2.dilate(edge.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    m = max(1, int(round(FRINGE_MARGIN * face_w)))
    widened = cv2.dilate(fringe.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * m + 1,) * 2))
    # Below the fringe, its tips: darker than the skin, if not by much.
    tips = (widened > 0) & inner & (lab[..., 0] < skin.median[0] - FRINGE_TIP_DARKER)
    return fringe | tips


def clipped_skin(img: np.ndarray, skin: np.ndarray) -> np.ndarray | None:
    """The skin whose colour can be read where an overexposed face has clipped pixels (a channel at
    CLIPPED or above; more than CLIPPED_SHARE of the skin): the rest of it, or None (all of it).
    A clipped pixel has lost its hue: red and green both at 255 read as a greenish yellow, and such
    pixels in the target's colour means turned the swapped skin and brows green and its highlights
    blue."""
    # The channels' maximum by two element-wise maxima: NumPy's max over the last axis of 3 took 1 ms
    # on a 200 px face crop, 25 times as long.
    clipped = skin & (np.maximum(np.maximum(img[..., 0], img[..., 1]), img[..., 2]) >= CLIPPED)
    count = int(np.count_nonzero(clipped))
    if count <= CLIPPED_SHARE * int(np.count_nonzero(skin)):
        return None
    rest = skin & ~clipped
    return rest if np.count_nonzero(rest) >= 16 else None


def shade_slope(lab: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """How the skin's a and b (Lab) change with its lightness L over a face: the least-squares
    slopes (2,). In a real face the shaded skin is redder and more saturated than the lit skin,
    not a greyer copy of it."""
    px = lab[skin][::2].astype(np.float64)
    if len(px) < 16:
        return np.zeros(2, np.float32)
    return np.clip(lightness_slopes(px), -1.0, 1.0).astype(np.float32)


def relief_gain(source_relief: np.ndarray, target_relief: np.ndarray) -> float:
    """How much of the source skin's relief (its lightness over its local mean: folds, the shading
    of its cheeks) the target's skin shows at its own contrast: the spread (RELIEF_QUANTILE to its
    complement) of the target's relief over the source's, within RELIEF_GAIN_MIN and 1."""
    if source_relief.size < 16 or target_relief.size < 16:
        return 1.0
    q = (100 * RELIEF_QUANTILE, 100 * (1 - RELIEF_QUANTILE))
    source_spread = float(np.ptp(np.percentile(source_relief, q)))
    target_spread = float(np.ptp(np.percentile(target_relief, q)))
    return float(np.clip(target_spread / max(source_spread, 1e-6), RELIEF_GAIN_MIN, 1.0))


def relight(warped_lab: np.ndarray, target_lab: np.ndarray, source_skin: np.ndarray, target_skin: np.ndarray,
            sigma: float, brows: np.ndarray | None = None, lips: np.ndarray | None = None,
            fine: np.ndarray | None = None, source_colour: float = 1.0,
            target_colour_skin: np.ndarray | None = None) -> np.ndarray:
    """The warped source's texture without its own light, on the target's skin and light (Lab,
    float): the target's local mean (masked Gaussian mean over its skin) plus the source's
    lightness over its own local mean, and the colour each shade has in the target's skin
    (shade_slope): the source's colour and its shading at the mean's scale (a shadow down one side
    of its face) do not come along, and a shade of the source reads as a shade of the target's skin,
    not as a grey smudge. The source's ``lips`` keep their whole lightness and colour over its
    skin's (their red is the source's, on the target's skin tone), and its ``brows`` their own
    darkness and colour. Where ``fine`` (a weight, 0-1: around the eyes) is set, the means also
    follow the light at FINE_LIGHT_SCALE of the Gaussian: the target's shade at the scale of a lid
    (the crease over a squint) stays, and the source's lit lids do not come along.
    source_colour: how much colour of its own the source has (facepipe.media.tone.colour_weight):
    a black-and-white or sepia photo (0) has none to bring, and there its colour detail and its
    brows' saturation give way to the target's (brows in the target skin's colour, not a grey that
    reads as blue beside it), its lips' colour to the target's own lips'.
    target_colour_skin: the part of the target's skin whose hue is read (its colour means' hue and
    its shade slope), where that is not all of it (clipped_skin: an overexposed face's clipped
    pixels have lost their hue)."""
    source_means, target_weights = _MaskedMeans(warped_lab, source_skin), _MaskWeights(target_skin)
    target_means = _MaskedMeans(target_lab, target_weights)
    if target_colour_skin is not None:
        hue_means = _MaskedMeans(np.ascontiguousarray(target_lab[..., 1:]), target_colour_skin)
        chroma_means = _MaskedMeans(np.hypot(target_lab[..., 1:2] - 128.0, target_lab[..., 2:3] - 128.0),
                                    target_weights)

    def target_at(scale):
        means = list(cv2.split(target_means.at(scale)))
        if target_colour_skin is not None:
            # The skin's hue from where it is read, its saturation from all of it (the mean of each
            # pixel's, not of their colours: hues that differ would cancel): where the face is
            # clipped the mean stays as pale as the face is, in its skin's hue, not a greenish
            # yellow (and the unclipped skin's saturation, spread over the clipped face, painted it
            # orange).
            a, b = (plane - 128.0 for plane in cv2.split(hue_means.at(scale)))
            chroma = chroma_means.at(scale)[..., 0] / np.maximum(np.hypot(a, b), 1e-3)
            means[1], means[2] = 128.0 + a * chroma, 128.0 + b * chroma
        return means

    # The channels as planes of their own from here on: arithmetic on a channel of a Lab image
    # strides through all three (a third of this function's time went to it).
    source_mean = list(cv2.split(source_means.at(sigma * SOURCE_LIGHT_SCALE)))
    target_mean = target_at(sigma)
    warped = cv2.split(warped_lab)
    if fine is not None and fine.any():
        # Only the source's light at that scale is taken out (where its lids are lighter than its
        # skin's wider mean: lit), and only the target's shade put in (where its lids are darker:
        # a crease, the shadow under a lowered brow); the source's own dark lines (its lid crease,
        # its sockets) and the target's lit lids are left as they were: they carry the source's
        # look (identity_benchmark's mean distance rose by 0.02 where both were replaced).
        # Their colour follows at that scale both ways (the lids' own tone in each face).
        fine_sigma = max(1.0, sigma * FINE_LIGHT_SCALE)
        for channel, (lit, shade) in enumerate(zip(cv2.split(source_means.at(fine_sigma)), target_at(fine_sigma))):
            lit -= source_mean[channel]
            shade -= target_mean[channel]
            if channel == 0:
                np.maximum(lit, 0.0, out=lit)
                np.minimum(shade, 0.0, out=shade)
            source_mean[channel] += fine * lit
            target_mean[channel] += fine * shade
    detail = warped[0] - source_mean[0]
    # The skin's shades and highlights are compressed (the source's eye sockets, the shadow beside
    # its nose, a shine are its light as much as its shape); its brows keep their full darkness
    # (they carry identity).
    squeezed = np.where(detail > 0, HIGHLIGHT_RANGE * np.tanh(detail / HIGHLIGHT_RANGE),
                        SHADE_RANGE * np.tanh(detail / SHADE_RANGE))
    # At the target's contrast: on a washed-out face (a pale face lit flat or overexposed) the
    # source's folds and cheek shading at their own depth read as brown streaks on a pale mask.
    target_local = _masked_mean(target_lab[..., :1], target_weights, sigma * SOURCE_LIGHT_SCALE)[..., 0]
    target_relief = cv2.extractChannel(target_lab, 0) - target_local
    squeezed *= relief_gain(detail[source_skin], target_relief[target_skin])
    colour = [warped[channel] - source_mean[channel] for channel in (1, 2)]
    squeezed_colour = [COLOUR_RANGE * np.tanh(c / COLOUR_RANGE) for c in colour]
    if source_colour < 1.0:
        squeezed_colour = [source_colour * c for c in squeezed_colour]
    slope = shade_slope(target_lab, target_skin if target_colour_skin is None else target_colour_skin)
    shade_colour = [squeezed * slope[0], squeezed * slope[1]]
    if brows is not None:
        # The brows' hairs are not shaded skin: they keep their own darkness, and their saturation
        # over the skin's, in the target skin's hue (the skin's shade colour, taken that dark,
        # paints them orange or red; the source's own hue over another skin reads olive or grey).
        hair = brows & (detail < 0)
        # Read and set at the hairs' pixels only (a few percent of the crop).
        squeezed[hair] = detail[hair]
        skin_chroma = np.hypot(source_mean[1][hair] - 128.0, source_mean[2][hair] - 128.0)
        hair_chroma = np.hypot(warped[1][hair] - 128.0, warped[2][hair] - 128.0)
        ratio = np.clip(hair_chroma / np.maximum(skin_chroma, 1.0), 0.0, BROW_CHROMA_MAX) - 1.0
        if source_colour < 1.0:
            ratio *= source_colour
        for plane, shade_plane, mean in zip(squeezed_colour, shade_colour, target_mean[1:]):
            plane[hair] = (mean[hair] - 128.0) * ratio
            shade_plane[hair] = 0.0
    if lips is not None:
        # Set at the lips' pixels only (a few percent of the crop).
        squeezed[lips] = detail[lips]
        for channel in (0, 1):
            squeezed_colour[channel][lips] = colour[channel][lips]
            shade_colour[channel][lips] = detail[lips] * slope[channel]
            if source_colour < 1.0:
                # The target's own lips' colour over its skin, where the source has none to give.
                own = target_lab[..., channel + 1][lips] - target_mean[channel + 1][lips] - shade_colour[channel][lips]
                squeezed_colour[channel][lips] = (source_colour * squeezed_colour[channel][lips]
                                                  + (1.0 - source_colour) * own)
    # The source's shades, highlights, brows, lips and colour detail are relative to its light, not
    # absolute: the same fold or brow under less light is darker by less and less coloured (Lab's
    # L* + 16 follows the cube root of the light, a* and b* with it). Where the target's skin is
    # darker than the source's (a dim room, a night scene) they come over scaled by the two skins'
    # ratio of (L* + 16), their medians; added at full depth, they went black (brows, folds: red
    # streaks where their colour outlived the light) and white (highlights: pale blotches) on a dim
    # face. On a target lit as brightly as the source or more, they come over as they are.
    light = min((_median(target_lab[..., 0][target_skin]) + _L16) / (_median(warped[0][source_skin]) + _L16), 1.0)
    if light < 1.0:
        light = np.float32(light)
        squeezed = squeezed * light
        shade_colour = [plane * light for plane in shade_colour]
        squeezed_colour = [plane * light for plane in squeezed_colour]
    out = target_mean
    out[0] += squeezed
    for channel in (0, 1):
        out[channel + 1] += shade_colour[channel]
        out[channel + 1] += squeezed_colour[channel]
    return cv2.merge(out)


def _distance_to_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Each point's distance to a closed polygon's outline: OpenCV's pointPolygonTest (measureDist)
    for all points at once, its arithmetic kept (coordinates in float32, their differences widened
    to double), so the distances are the ones it returns (one call a point was 3% of the swap)."""
    # x and y as planes of their own (points x edges): a last axis of two strides every operation.
    v = polygon.astype(np.float32)
    v0 = np.roll(v, 1, axis=0)  # each edge runs from the vertex before (the last one, for the first)
    p = points.astype(np.float32)
    dx, dy = ((v[:, i] - v0[:, i]).astype(np.float64)[None] for i in (0, 1))
    d1x, d1y = ((p[:, i, None] - v0[None, :, i]).astype(np.float64) for i in (0, 1))
    d2x, d2y = ((p[:, i, None] - v[None, :, i]).astype(np.float64) for i in (0, 1))
    before = d1x * dx + d1y * dy <= 0
    after = ~before & (d2x * dx + d2y * dy >= 0)
    across = d1y * dx - d1x * dy
    with np.errstate(divide="ignore", invalid="ignore"):
        squared = np.where(before, d1x * d1x + d1y * d1y,
                           np.where(after, d2x * d2x + d2y * d2y, across * across / (dx * dx + dy * dy)))
    return np.sqrt(squared.min(axis=1))


def mirror_triangles(mirror_tris: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Each triangle's mirror image's index among ``tris`` (its own where it has none)."""
    key = {tuple(sorted(t)): i for i, t in enumerate(tris.tolist())}
    return np.array([key.get(tuple(sorted(t)), i) for i, t in enumerate(mirror_tris.tolist())])


def _views(area: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """Each triangle's area (0 where it faces away) over the larger of it and its mirror image's
    (``mirror``: mirror_triangles): 1 where a face sees the triangle at least as well as its
    mirror, towards 0 as it turns away."""
    return area / np.maximum(np.maximum(area, area[mirror]), 1e-6)


def turn_of(pts: np.ndarray) -> float:
    """How far a face is turned from the camera: 1 - the nose tip's distance to the nearer side of
    the oval over its distance to the farther (0 frontal, towards 1 in profile)."""
    near, far = sorted((np.linalg.norm(pts[NOSE_TIP] - pts[CHEEK_IMAGE_LEFT]),
                        np.linalg.norm(pts[NOSE_TIP] - pts[CHEEK_IMAGE_RIGHT])))
    return float(1.0 - near / max(far, 1e-6))


def shape_offsets(source_pts: np.ndarray, target_pts: np.ndarray) -> np.ndarray:
    """Per mesh point, the move (image pixels) that gives the target the source's proportions:
    the source laid on the target by the affine map that best fits their upper faces (above the
    upper lip, which the expression moves least), then the difference, except that

    * each eye moves as a whole (its mean offset), so its opening (a blink) stays the target's;
    * the lips move by their corners' mean shift and take the source's width along the mouth,
      so their opening stays the target's;
    * below the mouth the move along the face's vertical is the mouth's: how far the jaw is
      dropped (speech) stays the target's, the jaw's width takes the source's."""
    pts = target_pts.astype(np.float64)
    src = source_pts.astype(np.float64)
    down = pts[CHIN] - pts[FOREHEAD_TOP]
    down /= max(np.linalg.norm(down), 1e-9)
    upper = (pts - pts[0]) @ down < 0
    ones = np.ones((len(pts), 1))
    fit = np.linalg.lstsq(np.hstack([src, ones])[upper], pts[upper], rcond=None)[0]
    laid = np.hstack([src, ones]) @ fit
    # A turned face is foreshortened more on its far half than on its near one, which no affine
    # map takes out: across the face, each point is placed at the source's share of its half's
    # width (midline to oval), in the target's own half-widths. The source's proportions come
    # over; the target's turn stays.
    across = np.array([-down[1], down[0]])

    def halves(points):
        """Each point's position across the face, its midline's, and the width of its half."""
        a = points @ across
        mid = a[MIDLINE].mean()
        oval = a[FACE_OVAL] - mid
        return a, mid, np.where(a < mid, max(-oval.min(), 1e-6), max(oval.max(), 1e-6))

    a_src, mid_src, half_src = halves(laid)
    a_tgt, mid_tgt, half_tgt = halves(pts)
    d_across = (a_src - mid_src) / half_src * half_tgt + mid_tgt - a_tgt
    laid = pts + ((laid - pts) @ down)[:, None] * down + d_across[:, None] * across
    d = laid - pts
    for eye in (EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT):
        d[eye] = d[eye].mean(axis=0)
    corners = list(MOUTH_CORNERS)
    shift = (laid[corners] - pts[corners]).mean(axis=0)
    along = pts[corners[1]] - pts[corners[0]]
    width = max(np.linalg.norm(along), 1e-9)
    along /= width
    centre = pts[corners].mean(axis=0)
    stretch = np.linalg.norm(laid[corners[1]] - laid[corners[0]]) / width - 1.0
    d[LIPS] = shift + (((pts[LIPS] - centre) @ along) * stretch)[:, None] * along
    below = (pts - centre) @ down > 0
    below[LIPS] = False
    d[below] -= ((d[below] - shift) @ down)[:, None] * down
    return d


def _periocular(pts: np.ndarray, shape: tuple[int, int], face_w: float) -> np.ndarray:
    """The zone around each eye (float, 0-1): the convex hull of its contour and its brow, grown
    by PERIOCULAR_MARGIN of the face width and softened as much."""
    zone = np.zeros(shape, np.uint8)
    for eye, brow in ((EYE_IMAGE_LEFT, BROW_IMAGE_LEFT), (EYE_IMAGE_RIGHT, BROW_IMAGE_RIGHT)):
        cv2.fillConvexPoly(zone, cv2.convexHull(np.round(pts[eye + brow]).astype(np.int32)), 1)
    r = max(1, int(round(PERIOCULAR_MARGIN * face_w)))
    zone = cv2.dilate(zone, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2))
    return cv2.GaussianBlur(zone.astype(np.float32), (0, 0), r / 2.0)


def _mouth_cavity(img: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """The dark inside of the mouth (uint8 mask): pixels within CAVITY_REACH of the outer lip contour
    darker than CAVITY_SHARE of the skin's around them. The mesh's lip contours can fall
    short of an open mouth's opening (a dropped jaw read too high), and the source's lips must not
    cover it."""
    shape = img.shape[:2]
    outer = _poly_mask(pts, LIPS_OUTER, shape)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    r = max(1, int(round(CAVITY_REACH * float(np.ptp(pts[:, 0])))))
    near = cv2.dilate(outer, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2)) > 0
    ring = near & (outer == 0)
    if ring.sum() < 8:
        return np.zeros(shape, np.uint8)
    # Against the skin around the lips (its upper quartile: the opening itself may lie in the ring).
    dark = (near & (gray < CAVITY_SHARE * float(np.percentile(gray[ring], 75)))).astype(np.uint8)
    dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    # Only what is dark from the opening on: the inside of the mouth reaches the line between the
    # lips. A crease beside the mouth (an old face's fold down from its corner, a laugh's) is as dark
    # but apart from it, and kept as the target's it stood as a dark blot on the swapped cheek.
    opening = _poly_mask(pts, LIPS_INNER, shape)
    cv2.polylines(opening, [np.round(pts[LIPS_INNER]).astype(np.int32)], True, 1, 1)
    opening = cv2.dilate(opening, np.ones((3, 3), np.uint8))
    return pieces_touching(dark > 0, opening > 0).astype(np.uint8) * 255


# Faces wider than this (px) are swapped at this width and enlarged back, the source's finer detail
# added at full size (MeshSwapper._full_size): the swap's cost grows with the face's area (270-300 ms
# for a 500 px face against 34 ms at 167 px, on one core), while its light, colour, masks and seams are
# smooth at this scale.
SWAP_WIDTH = 256


def _with_kept(pasted: np.ndarray, target: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The pasted face (float BGR) with the target's own pixels where ``keep`` (h x w x 1, 0-1) says:
    its eyes and mouth."""
    return pasted * (1.0 - keep) + target.astype(np.float32) * keep


class SwapLayers(NamedTuple):
    """One face's swap on its crop, before the final blend: the pasted face (float BGR) without the
    target's kept eyes and mouth; ``keep`` (h x w x 1, 0-1) where they show instead; the target
    itself (moved with the shape transfer); the paste's alpha; the maps (x, y) from the crop to the
    source image and to the target's own crop (None: not moved)."""

    pasted: np.ndarray
    keep: np.ndarray
    target: np.ndarray
    alpha: np.ndarray
    to_source: tuple[np.ndarray, np.ndarray]
    to_target: tuple[np.ndarray, np.ndarray] | None


class MeshSwapper(PixelSwapper):
    """Pastes one source face onto target faces over the dense mesh (the offline swappers'
    interface, facepipe.models.classic_swap.PixelSwapper). ``shape_transfer`` (0-100) is how far the
    target's face shape moves towards the source's."""

    name = "mesh"

    def __init__(self, source_crop: np.ndarray, source_landmarks: np.ndarray, shape_transfer: int = SHAPE_TRANSFER):
        self.src_pts = _points(source_landmarks, "the source face")
        self.src = source_image(source_crop, self.src_pts)
        if not 0 <= shape_transfer <= 100:
            raise SwapError(f"shape_transfer is {shape_transfer}, not 0-100")
        self.shape_transfer = float(shape_transfer) / 100.0
        self.triangles = triangles()
        # Which triangles face the camera in the source (the sign most of the face's area has),
        # and for the others, whether their mirror image on the other half does (its vertices run
        # the other way round).
        area = signed_areas(self.src_pts[self.triangles])
        front = np.sign(area.sum()) or 1.0
        self._mirror_tris = mirror_map()[self.triangles]
        own = area * front > 1e-2
        mirrored = ~own & (signed_areas(self.src_pts[self._mirror_tris]) * front < -1e-2)
        self._src_tris = np.where(own[:, None], self.triangles, self._mirror_tris)
        self._src_ok = own | mirrored
        # The source's face as the camera sees it (its triangles that face it, a pixel wider for the
        # bilinear warp): a pixel whose map lands outside it (a triangle's rasterised edge, a
        # sliver of a triangle stretched far) is an empty part of the warp, never pasted.
        face = np.zeros(self.src.shape[:2], np.uint8)
        for tri in self.triangles[own]:
            cv2.fillConvexPoly(face, np.round(self.src_pts[tri]).astype(np.int32), 1)
        self._src_face = cv2.dilate(face, np.ones((3, 3), np.uint8)) > 0
        # Its fringe (source_fringe), never pasted on the target's forehead.
        self._src_fringe = source_fringe(self.src, self.src_pts, self._regions(self.src_pts, self.src.shape[:2]))
        self._src_turn = turn_of(self.src_pts)
        # How well the source sees each triangle (_views; a folded one, filled from its mirror
        # image, not at all: that fill is the other cheek's light and tone).
        self._mirror_index = mirror_triangles(self._mirror_tris, self.triangles)
        self._src_view = _views(np.where(own, np.abs(area), 0.0), self._mirror_index)
        # A black-and-white or sepia source photo has no colour of its own to bring (relight).
        self._src_colour = colour_weight(tone_of(self.src[self._src_face][None])[0])

    @classmethod
    def from_source(cls, data: dict, where: str = "source embedding", shape_transfer: int = SHAPE_TRANSFER):
        swapper = super().from_source(data, where)
        if not 0 <= shape_transfer <= 100:
            raise SwapError(f"shape_transfer is {shape_transfer}, not 0-100")
        swapper.shape_transfer = float(shape_transfer) / 100.0
        return swapper

    def points(self, landmarks, what: str) -> np.ndarray:
        return _points(landmarks, what)

    def masks(self, pts: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The face oval's mask and the kept (target) eyes-and-mouth mask, uint8, for points in a
        frame of ``shape``."""
        return self._regions(pts, shape)[:2]

    def _regions(self, pts: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
        """masks(), the forehead (the oval above the brows' upper edges, where a source's or a
        target's fringe can hang) and the zone around the brows (BROW_MARGIN, within the oval), each
        less the brows themselves."""
        face_w = float(pts[:, 0].max() - pts[:, 0].min())
        region = pts.copy()
        region[FOREHEAD] += FOREHEAD_PULL * (pts[MID_BROW] - pts[FOREHEAD])
        oval = _poly_mask(region, FACE_OVAL, shape)
        brows = _poly_mask(pts, BROW_IMAGE_LEFT, shape) | _poly_mask(pts, BROW_IMAGE_RIGHT, shape)
        r = max(1, int(round(BROW_MARGIN * face_w)))
        around = cv2.dilate(brows, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2)) & _poly_mask(
            pts, FACE_OVAL, shape)
        if turn_of(pts) >= BROW_MAX_TURN:
            around[:] = 0  # a turned face's mesh misplaces its far brow: the target keeps its brows
        oval |= around
        # The forehead: the oval above the line along the brows' upper edges (and the mid-brow).
        down = pts[CHIN] - pts[FOREHEAD_TOP]
        line = pts[BROW_UPPER_LEFT + [MID_BROW] + BROW_UPPER_RIGHT[::-1]]
        above = np.zeros(shape, np.uint8)
        cv2.fillPoly(above, [np.round(np.vstack([line, line[::-1] - down])).astype(np.int32)], 1)
        band = above & oval & ~brows
        zone = around & ~brows
        keep = np.zeros(shape, np.uint8)
        for idx, margin in ((EYE_IMAGE_LEFT, EYE_MARGIN), (EYE_IMAGE_RIGHT, EYE_MARGIN), (LIPS_INNER, MOUTH_MARGIN)):
            part = _poly_mask(pts, idx, shape)
            r = int(round(abs(margin) * face_w))
            if r > 0:
                kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2)
                part = cv2.dilate(part, kernel) if margin > 0 else cv2.erode(part, kernel)
            keep |= part
        return oval, keep, band, zone

    def reshaped(self, pts: np.ndarray) -> np.ndarray:
        """The target's mesh moved towards the source's proportions (shape_offsets): by
        ``shape_transfer``, fading in from the oval (fixed) over SHAPE_FADE of the face width and
        out as either face turns away; halved until no triangle that faced the camera folds over."""
        face_w = float(np.ptp(pts[:, 0]))
        pose = 1.0 - max(turn_of(pts), self._src_turn) / SHAPE_MAX_TURN
        if self.shape_transfer <= 0 or pose <= 0 or face_w < 8:
            return pts
        fade = np.clip(_distance_to_polygon(pts.astype(np.float64), pts[FACE_OVAL].astype(np.float64))
                       / (SHAPE_FADE * face_w), 0.0, 1.0)
        fade = fade * fade * (3 - 2 * fade)
        move = shape_offsets(self.src_pts, pts) * (fade * pose * self.shape_transfer)[:, None]
        length = np.linalg.norm(move, axis=1, keepdims=True)
        move *= np.minimum(1.0, SHAPE_MAX_MOVE * face_w / np.maximum(length, 1e-9))
        area = signed_areas(pts[self.triangles])
        front = area * (np.sign(area.sum()) or 1.0) > 1e-2
        for _ in range(4):
            moved = (pts + move).astype(np.float32)
            if (signed_areas(moved[self.triangles])[front] * np.sign(area[front]) > 0).all():
                return moved
            move *= 0.5
        return pts

    def swap_one(self, img: np.ndarray, target_pts: np.ndarray):
        """The swapped face as a "pixels" patch over its mesh's rectangle, or None. A face wider than
        SWAP_WIDTH is swapped at that width (_layers) and brought back to its own size (_full_size)."""

        h, w = img.shape[:2]
        x0, y0, x1, y1 = hull_bbox(target_pts, (h, w), 0.0)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None  # a face this small (or off-frame) has nothing to paste onto
        pts = (target_pts - np.array([x0, y0], np.float32)).astype(np.float32)
        roi = img[y0:y1, x0:x1]
        scale = SWAP_WIDTH / max(float(np.ptp(pts[:, 0])), 1e-6)
        if scale < 1.0:
            return self._full_size(roi, pts, scale, x0, y0)
        layers = self._layers(roi, pts)
        if layers is None:
            return None
        return blended_patch(roi, _with_kept(layers.pasted, layers.target, layers.keep), layers.alpha, x0, y0)

    def _full_size(self, roi: np.ndarray, pts: np.ndarray, scale: float, x0: int, y0: int):
        """swap_one of a large face: the swap at SWAP_WIDTH (its light, colour, masks and seams are
        smooth at that scale), enlarged, with the source's finer detail added back from its warp at
        full size (blurred as the target is there) and the target's kept eyes and mouth at full size."""
        rh, rw = roi.shape[:2]
        size = (max(8, round(rw * scale)), max(8, round(rh * scale)))
        sx, sy = size[0] / rw, size[1] / rh
        # Points on the shrunk crop under cv2.resize's pixel-centre convention.
        small_pts = ((pts + 0.5) * np.array([sx, sy], np.float32) - 0.5).astype(np.float32)
        layers = self._layers(cv2.resize(roi, size, interpolation=cv2.INTER_AREA), small_pts)
        if layers is None:
            return None

        def enlarged(a: np.ndarray) -> np.ndarray:
            return cv2.resize(a, (rw, rh), interpolation=cv2.INTER_LINEAR).reshape((rh, rw) + a.shape[2:])

        # The piecewise-affine maps are continuous over the mesh, so enlarging them is the warp at
        # full size (they jump only outside the oval, where alpha is 0).
        warped = cv2.remap(self.src, enlarged(layers.to_source[0]), enlarged(layers.to_source[1]), cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        if layers.to_target is None:
            target = roi
        else:
            # The map's values are shrunk-crop pixels: taken back to the crop's.
            tx = (enlarged(layers.to_target[0]) + 0.5) / sx - 0.5
            ty = (enlarged(layers.to_target[1]) + 0.5) / sy - 0.5
            target = cv2.remap(roi, tx, ty, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        detail = warped - enlarged(cv2.resize(warped, size, interpolation=cv2.INTER_AREA))
        # The source's detail no sharper than the target's own at full size (match_sharpness did
        # this for the coarser detail at the shrunk size).
        alpha = np.clip(enlarged(layers.alpha), 0.0, 1.0)
        target_blur = blur_sigma(cv2.cvtColor(target, cv2.COLOR_BGR2GRAY), alpha > 0.5)
        if target_blur > 0.3:
            detail = cv2.GaussianBlur(detail, (0, 0), target_blur)
        pasted = _with_kept(enlarged(layers.pasted) + detail, target, enlarged(layers.keep[..., 0])[..., None])
        return blended_patch(roi, pasted, alpha, x0, y0)

    def _layers(self, roi: np.ndarray, pts: np.ndarray) -> SwapLayers | None:
        """The swap of one face on its crop (roi, its mesh points pts in the crop's pixels), as the
        layers swap_one blends: None where there is nothing to paste."""
        shape = roi.shape[:2]
        face_w = float(pts[:, 0].max() - pts[:, 0].min())
        moved = self.reshaped(pts)

        # Piecewise-affine warps in one remap each: which triangle each pixel lies in (of those
        # facing the camera in the target), and that triangle's maps to the source (its own
        # triangle or its mirror image) and to the target's own unmoved mesh.
        tris = self.triangles
        dst = moved[tris]
        area = signed_areas(dst)
        drawn = np.flatnonzero(area * (np.sign(signed_areas(pts[tris]).sum()) or 1.0) > 1e-2)
        to_src = np.zeros((len(drawn) + 1, 2, 3), np.float32)  # the last entry: outside every triangle
        to_src[:-1] = triangle_affines(dst[drawn], self.src_pts[self._src_tris[drawn]])
        src_ok = np.append(self._src_ok[drawn], False)
        tri_id = triangle_ids(np.round(dst[drawn]).astype(np.int32), shape)
        map_x, map_y = piecewise_maps(to_src, tri_id)
        warped = cv2.remap(self.src, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        sh, sw = self._src_face.shape
        # Each pixel's nearest source pixel, as an index into the source's flat masks.
        at = (np.clip(np.round(map_y).astype(np.int32), 0, sh - 1) * sw
              + np.clip(np.round(map_x).astype(np.int32), 0, sw - 1))
        valid = np.take(src_ok, tri_id) & np.take(self._src_face, at)
        warped_fringe = np.take(self._src_fringe, at)
        target_map = None
        if moved is pts:
            target = roi
        else:
            to_target = np.tile(np.array([[1, 0, 0], [0, 1, 0]], np.float32), (len(drawn) + 1, 1, 1))
            to_target[:-1] = triangle_affines(dst[drawn], pts[tris[drawn]])
            # Outside every triangle: the identity, the pixel itself.
            target_map = piecewise_maps(to_target, tri_id)
            target = cv2.remap(roi, *target_map, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

        oval, keep, band, zone = self._regions(moved, shape)
        keep |= _mouth_cavity(target, moved)
        # Skin: the face less its eyes, brows and mouth, less what is not skin in colour in the
        # target or in the warped source (hair, or background where the oval runs past the face's
        # outline on a turned face). There the target keeps its own pixels, and no mean is read.
        kk = max(1, int(round(KEEP_FEATHER * face_w)))
        lips = _poly_mask(moved, LIPS_OUTER, shape)
        eyes = _poly_mask(moved, EYE_IMAGE_LEFT, shape) | _poly_mask(moved, EYE_IMAGE_RIGHT, shape)
        brow_masks = _poly_mask(moved, BROW_IMAGE_LEFT, shape) | _poly_mask(moved, BROW_IMAGE_RIGHT, shape)
        features = keep | lips | eyes | brow_masks
        features = cv2.dilate(features, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (4 * kk + 1,) * 2)) > 0
        face = (oval > 0) & valid & ~features
        if face.sum() < 16:
            return None
        t_lab = cv2.cvtColor(target, cv2.COLOR_BGR2LAB).astype(np.float32)
        w_lab = cv2.cvtColor(warped, cv2.COLOR_BGR2LAB).astype(np.float32)
        # The skin's colour is read well inside the oval, where neither face has hair or background.
        centre_oval = skin_core(oval, face_w)
        centre = face & (centre_oval > 0)
        if centre.sum() < 16:
            centre = face
        skin, source_model = SkinModel(t_lab, centre), SkinModel(w_lab, centre)
        # Hair and background show inside the oval only near its edge (the hairline, the outline of
        # a turned face): there only pixels close to the skin's colour count (hair is often near it
        # in lightness or hue, and a band of it darkens a mean); further in, everything is skin (a
        # shadow, an orange nose tip, stubble: a colour test would leave them out, and the mean
        # would then not take that shade out of the source or put it into the target).
        in_centre = centre_oval > 0
        (target_loose, target_strict), (source_loose, source_strict) = skin.both(t_lab), source_model.both(w_lab)
        target_skin = in_centre | target_strict
        source_skin = in_centre | source_strict
        # Near the oval, what is clearly not skin in either face (by the looser test) keeps the
        # target's pixels: hair, or background where the oval runs past a turned face's outline.
        both = in_centre | (target_loose & source_loose)
        # Hair and background come in from the oval's edge; what is not skin inside the face, apart
        # from its edge, is the face's own shade (a dimple, the shadow under a laughing lip): left
        # as a hole in the paste, it showed the target's dark spot on the pasted skin.
        not_skin = (oval > 0) & ~both
        both |= not_skin & ~pieces_touching(not_skin, cv2.erode(oval, np.ones((3, 3), np.uint8)) == 0)
        # Above the brows only what is close to the skin in both faces (the strict test): the edge of
        # a fringe there passes the looser test, and pasted it reads as an orange arc. Around the
        # brows (BROW_MARGIN) only the source is tested: the target's own brows, wherever its mesh
        # put them, are covered by the source's, not left beside them as a second pair.
        both &= ~(band > 0) | (target_strict & source_strict)
        both |= (zone > 0) & source_strict
        # Nor does the source's fringe, or its tips below it, that the strict test lets through.
        both &= ~((band > 0) & warped_fringe)
        both = both.astype(np.uint8)
        small = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * kk + 1,) * 2)
        both = cv2.morphologyEx(cv2.morphologyEx(both, cv2.MORPH_CLOSE, small), cv2.MORPH_OPEN, small) > 0
        inside = (oval > 0) & valid & (both | features)
        k = max(2, int(round(FEATHER * face_w)))
        # Erode by k, blur with a (2k+1) kernel: the ramp reaches back out by at most k pixels, so
        # alpha is zero on and outside the oval and wherever the target keeps its pixels.
        core = cv2.erode(inside.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1,) * 2))
        if core.sum() == 0:
            return None
        # The means are read over all of the face that is skin, up to the oval: a mean that had to
        # reach out from further in would leave the source's shading near the oval in place.
        if (face & target_skin).sum() < 16 or (face & source_skin).sum() < 16:
            return None
        brows = brow_masks > 0
        out_lab = relight(w_lab, t_lab, face & source_skin, face & target_skin, max(2.0, LIGHT_SIGMA * face_w),
                          cv2.dilate(brows.astype(np.uint8), small) > 0, lips > 0, _periocular(moved, shape, face_w),
                          self._src_colour, clipped_skin(target, face & target_skin))
        warped = cv2.cvtColor(np.clip(np.round(out_lab), 0, 255).astype(np.uint8), cv2.COLOR_LAB2BGR)

        # The blur is read over the whole face inside the core, the eyes and mouth included: the
        # estimate is a ratio at edges, so their contrast does not set the goal, and they are the
        # face's surest edges.
        region = core > 0
        target_blur = blur_sigma(cv2.cvtColor(target, cv2.COLOR_BGR2GRAY), region)
        warped, blur = match_sharpness(warped, target, region, target_blur)
        ramp = RAMP_GAIN * target_blur
        if blur > 0 and 2 * ramp > k:
            # The edge of the pasted face is no sharper than the target either: on a defocused face
            # the feather's ramp (sigma k/2) would otherwise be the sharpest thing in it. Its width
            # follows the target's own blur, and it stays zero on and outside the oval.
            k = int(np.ceil(2 * ramp))
            core = cv2.erode(inside.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1,) * 2))
            if core.sum() == 0:
                return None
        alpha = cv2.GaussianBlur(core.astype(np.float32), (2 * k + 1, 2 * k + 1), k / 2.0)
        # Around a hole inside the oval (an empty part of the warp: triangles that face away in both
        # faces) the ramp is wider (HOLE_FEATHER): its edge runs across the face, not along its outline.
        # (Read k in from the oval: along it the rasterised triangles and the oval differ by a pixel.)
        inner_oval = cv2.erode(oval, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1,) * 2))
        # The mesh has no triangles in the eyes' and the mouth's openings: those are not holes.
        openings = eyes | _poly_mask(moved, LIPS_INNER, shape)
        openings = cv2.dilate(openings, small, iterations=2)
        holes = ((inner_oval > 0) & ~valid & (openings == 0)).astype(np.uint8)
        kh = max(k, int(round(HOLE_FEATHER * face_w)))
        if holes.any() and kh > k:
            clear = cv2.erode(1 - holes, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * kh + 1,) * 2))
            alpha *= cv2.GaussianBlur(clear.astype(np.float32), (2 * kh + 1, 2 * kh + 1), kh / 2.0)
        # Where the source sees a triangle much worse than the target does (VIEW_POOR, VIEW_GOOD),
        # the target keeps its own pixels: see VIEW_POOR.
        t_view = _views(np.abs(signed_areas(pts[tris])), self._mirror_index)
        share = self._src_view / np.maximum(t_view, 1e-6)
        weight = np.clip((share - VIEW_POOR) / (VIEW_GOOD - VIEW_POOR), 0.0, 1.0)
        weight = np.take(np.append(weight[drawn] ** 2 * (3 - 2 * weight[drawn]), 1.0).astype(np.float32), tri_id)
        kv = max(1, int(round(VIEW_FEATHER * face_w)))
        alpha *= cv2.GaussianBlur(weight, (2 * kv + 1, 2 * kv + 1), kv / 2.0)
        alpha[~inside] = 0.0

        # Where the warp is empty the target's own pixels: nothing of an empty part reaches the face.
        pasted = np.where(inside[..., None], warped, target).astype(np.float32)
        pasted += poisson_correction(roi, pasted, inside, skin, max(1.5, BORDER_SIGMA * face_w))
        # The kept eyes and mouth fade in over at least the target's own blur: a hard edge between
        # the source's lids and the target's eyes would be the sharpest thing in a defocused face.
        keep_soft = cv2.GaussianBlur(cv2.dilate(keep, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * kk + 1,) * 2))
                                     .astype(np.float32) / 255.0, (0, 0), max(kk / 2.0, 1.5 * blur))[..., None]
        return SwapLayers(pasted, keep_soft, target, alpha, (map_x, map_y), target_map)


# The border difference is read as a difference of local means (masked Gaussian means over skin,
# this share of the face wide): a row of half-hair pixels at a hairline, or one noisy pixel, must
# not set the correction for the whole face (the feather takes the rest).
BORDER_SIGMA = 0.04
# The side (px) the Poisson correction is solved at, at most.
POISSON_SIDE = 96


def poisson_correction(target: np.ndarray, pasted: np.ndarray, domain: np.ndarray, skin: SkinModel,
                       sigma: float) -> np.ndarray:
    """The smooth correction (float, BGR) that brings ``pasted`` to the target on the border of
    ``domain`` and is harmonic inside it: pasted + correction is Poisson image editing's result
    (seamlessClone's NORMAL_CLONE, which solves it, run on the border difference over a flat
    source). The difference is of local means over the pixels that are skin in both images by the
    target's skin model: hair, background or a source's hairline on the border add nothing, so no
    colour from outside the face is drawn in."""
    t_lab = cv2.cvtColor(target, cv2.COLOR_BGR2LAB).astype(np.float32)
    p_lab = cv2.cvtColor(np.clip(pasted, 0, 255).astype(np.uint8), cv2.COLOR_BGR2LAB).astype(np.float32)
    # The pasted face's skin is trusted only well inside itself: a source's hairline shades into
    # its hair over a few pixels that the colour test alone lets through.
    inner = cv2.erode(skin.of(p_lab, strict=True).astype(np.uint8), np.ones((3, 3), np.uint8),
                      iterations=max(1, round(sigma)))
    trusted = skin.of(t_lab, strict=True) & (inner > 0)
    weights = _MaskWeights(trusted)
    diff = _masked_mean(target.astype(np.float32), weights, sigma) - _masked_mean(pasted, weights, sigma)
    near = cv2.GaussianBlur(trusted.astype(np.float32), (0, 0), sigma)
    diff *= np.clip(near / 0.2, 0.0, 1.0)[..., None]  # fading to none far from any trusted pixel
    # The domain without holes (the slit of closed eyes or lips, a speck): seamlessClone takes every
    # edge of its mask for the border, and a hole's would pull the lips' colour into the skin.
    contours, _ = cv2.findContours(domain.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    domain = cv2.drawContours(np.zeros(domain.shape, np.uint8), contours, -1, 1, cv2.FILLED) > 0
    # The correction is smooth (harmonic inside, a local mean on the border), so it is solved on a
    # copy shrunk to about POISSON_SIDE pixels across and enlarged back: the solve is most of the
    # swap's time on a large face, and what it loses at the border the feather covers.
    h, w = domain.shape
    scale = min(1.0, POISSON_SIDE / max(h, w))
    small = (max(4, round(w * scale)), max(4, round(h * scale)))
    small_domain = cv2.resize(domain.astype(np.uint8), small, interpolation=cv2.INTER_NEAREST)
    small_diff = cv2.resize(diff.astype(np.float32), small, interpolation=cv2.INTER_AREA)
    # A frame of 2 px: seamlessClone needs the domain clear of the image's edge.
    pad = 2
    mask = cv2.copyMakeBorder(small_domain * 255, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    if mask.max() == 0:
        return np.zeros_like(pasted)
    border = cv2.copyMakeBorder(np.clip(np.round(small_diff + 128), 0, 255).astype(np.uint8), pad, pad, pad, pad,
                                cv2.BORDER_REPLICATE)
    flat = np.full_like(border, 128)
    x, y, bw, bh = cv2.boundingRect(mask)
    filled = cv2.seamlessClone(flat, border, mask, (x + bw // 2, y + bh // 2), cv2.NORMAL_CLONE)
    correction = filled[pad:-pad, pad:-pad].astype(np.float32) - 128.0
    # Outside the shrunk domain the border's own difference, so the enlarged field runs on smoothly.
    correction = np.where(small_domain[..., None] > 0, correction, small_diff)
    if scale < 1.0:
        correction = cv2.resize(correction, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.where(domain[..., None], correction, 0.0)
