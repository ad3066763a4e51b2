"""Glasses on a face, found over its dense mesh (MediaPipe's 468 points): the offline backend has no
face parser to tell it where a frame is.

A target's glasses must stay on the swapped face (pasted over, the frame vanished wherever the face
oval reached and stayed beyond it: broken glasses); a source's must not come over (its frame
warped onto the target read as a ghost of glasses). Both need the frame's pixels:

1. **An upright canvas around the eyes**: the face turned so that its eyes are level, scaled so
   that they are EYE_DISTANCE canvas pixels apart (a similarity: a frame is rigid, and sits where
   the eyes are).
2. **Dark lines**: each pixel's darkness under its neighbourhood (morphological black-hat) at two
   scales, a thin rim's and a thick frame's; the eyes (lashes, lids) and the nose's flanks are
   left out.
3. **The gate**: glasses have a bridge. A piece of those lines must cross the nose between the eyes
   (every column of BRIDGE_HALF_WIDTH either side of the middle), with a sharp edge in each column
   (a frame's border, not a soft shadow), no thicker than BRIDGE_MAX, reaching both eyes. The
   brows are left out of this test (brows that meet are not a bridge). A face without such a
   piece has no glasses, and nothing of it is touched.
4. **The frame**: each lens's outline is fitted to the lines (a superellipse around the eye, by a
   grid search: the most line along the outline, less half of what lies just inside it, where an
   old face's creases under the eyes are). The frame is the lines within FRAME_BAND of the two
   outlines, the bridge, and what is as dark as a black frame joined to them (a cat-eye frame's
   tips). What lies further (creases, brows, the cheek) is not.
5. **Dark lenses** (sunglasses) are taken whole: over each eye a piece darker than a black frame,
   covering most of the eye (an open eye's white is not dark), twice its area or more, with a sharp
   edge against the skin (a shadow under a brow lit from above is soft). Over the target's eyes they
   stay; painted out of a source, its eyes' surroundings are the skin around them.

Known limits: a rimless or light frame (gold wire, clear plastic) gives no dark line and is not
found; a lens's tint and reflections are not looked at.
"""

from __future__ import annotations

import itertools

import cv2
import numpy as np

from facepipe.models.mesh_swap import (BROW_IMAGE_LEFT, BROW_IMAGE_RIGHT, EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT,
                                       pieces_touching)

# The canvas: eye centres EYE_DISTANCE apart, the left one (as the image shows it) at EYE_AT; room for
# the widest lenses and their frame (0.72 of the eye distance from an eye's centre).
EYE_DISTANCE = 100
EYE_AT = (80, 75)
CANVAS_SIZE = (260, 150)  # width, height
# Black-hat kernels (canvas px): a thin rim, and a thick frame (a bar a third of the eye distance thick).
THIN_KERNEL, THICK_KERNEL = 11, 31
# Line evidence (Lab lightness levels under the neighbourhood): strong pieces seed, weak ones extend.
THIN_STRONG, THIN_WEAK = 24.0, 16.0
THICK_STRONG, THICK_WEAK = 60.0, 40.0
# Where lenses are looked for: an ellipse around each eye (shares of the eye distance).
ZONE_HALF_WIDTH, ZONE_HALF_HEIGHT = 0.75, 0.55
# The nose's flanks below the eyes are long dark lines too: left out within this of the middle.
NOSE_HALF_WIDTH, NOSE_BELOW = 0.12, 0.12
# The bridge test: the columns within this of the middle, between these heights (above the eye line
# negative), crossed by a piece no thicker than BRIDGE_MAX (median over the columns), with an edge
# of at least BRIDGE_EDGE (Lab levels per pixel) beside it in BRIDGE_SHARE of them.
BRIDGE_HALF_WIDTH = 0.06
BRIDGE_TOP, BRIDGE_BOTTOM = -0.45, 0.1
BRIDGE_MAX = 0.3
BRIDGE_EDGE = 12.0
BRIDGE_SHARE = 0.9
# ... and reaching both eyes: in this share of the columns within OVER_EYE_HALF_WIDTH of each eye's
# centre (above it or below: on a small face the frame over one eye is cut from the bridge where it
# crosses the brow, left out of the test).
OVER_EYE_HALF_WIDTH = 0.15
OVER_EYE_SHARE = 0.7
# The lens outlines searched (shares of the eye distance; exponent 2 an ellipse, higher squarer).
LENS_SHIFT_X = (-0.06, -0.03, 0.0, 0.03, 0.06)  # positive: towards the temple
LENS_SHIFT_Y = (-0.04, 0.0, 0.04, 0.08, 0.12)
LENS_HALF_WIDTH = tuple(np.round(np.arange(0.36, 0.65, 0.04), 2))
LENS_HALF_HEIGHT = tuple(np.round(np.arange(0.24, 0.53, 0.04), 2))
LENS_EXPONENT = (2.0, 3.0, 4.5)
# What lies just inside an outline (at this share of its size) counts against it, by this weight.
INSIDE_SCALE, INSIDE_WEIGHT = 0.8, 0.5
# The frame: the lines within half of this (share of the eye distance) of an outline.
FRAME_BAND = 0.16
# A source's frame is painted out (without_glasses): closed over gaps this wide and grown by
# FILL_MARGIN (shares of its eye distance), filled with the local mean at FILL_SIGMA.
FILL_CLOSE, FILL_MARGIN, FILL_SIGMA = 0.05, 0.03, 0.12
# The frame also takes what is joined to it and darker than BLACK_SHARE of the cheeks' lightness
# (read below CHEEK_FROM of the eye distance under the eye line: a black frame, not an old face's
# shadowed sockets and creases), within BLACK_REACH times the zone and up to BLACK_ABOVE of the
# eye distance above the brows.
BLACK_SHARE, CHEEK_FROM = 0.45, 0.55
BLACK_REACH, BLACK_ABOVE = 1.2, 0.1
# Dark lenses (_dark_lenses): this share of an eye's pixels dark, the lens this many times the
# eye's area, its border's median slope of lightness at least LENS_EDGE (Lab levels per canvas px).
LENS_DARK_SHARE, LENS_AREA, LENS_EDGE = 0.6, 2.0, 15.0
_OUTLINE_POINTS = 120
# A track's template is the median of this many of its faces at most (a 30 s segment's track has
# up to 750).
TEMPLATE_FACES = 48
# The mesh points a track's faces are laid onto its template by (eye_frame): the eyes' corners, the
# brows, the nose's bridge and the cheekbones under the eyes; not the lids (they blink).
FRAME_POINTS = [33, 133, 362, 263, 168, 6, 197, 195, 116, 345, 117, 346, 118, 347] + BROW_IMAGE_LEFT + BROW_IMAGE_RIGHT


def eye_frame(pts: np.ndarray, template: np.ndarray | None = None) -> np.ndarray:
    """The 2x3 map from image pixels to the canvas. Without a template, the similarity that sets the
    eyes level, EYE_DISTANCE apart; with one (track_template(): a track's eye region on the canvas), the
    affine map that lays this face's eye region (FRAME_POINTS) best onto it, so that a head turned
    away (its far side foreshortened) lands where the track's median face does."""
    if template is not None:
        m, _ = cv2.estimateAffine2D(np.asarray(pts, np.float32)[FRAME_POINTS], template[FRAME_POINTS],
                                    method=cv2.LMEDS)
        if m is not None:
            return m.astype(np.float64)
    left, right = pts[EYE_IMAGE_LEFT].mean(0), pts[EYE_IMAGE_RIGHT].mean(0)
    along = (right - left).astype(np.float64)
    distance = max(float(np.hypot(*along)), 1e-6)
    c, s = along / distance
    rotation = np.array([[c, s], [-s, c]]) * (EYE_DISTANCE / distance)
    return np.hstack([rotation, (np.array(EYE_AT, np.float64) - rotation @ left)[:, None]])


def track_template(meshes: list[np.ndarray]) -> np.ndarray:
    """A track's eye region on the canvas: its faces' meshes (TEMPLATE_FACES of them, spread along
    it) on the canvas by their similarity (eye_frame), their median (float32, 468 x 2)."""
    laid = []
    for mesh in meshes[::max(1, -(-len(meshes) // TEMPLATE_FACES))]:
        m = eye_frame(mesh)
        laid.append(np.asarray(mesh, np.float64) @ m[:, :2].T + m[:, 2])
    return np.median(np.stack(laid), 0).astype(np.float32)


def canvas_of(img: np.ndarray, pts: np.ndarray, template: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """The face's lightness (Lab L, uint8) on the canvas, and its mesh there (eye_frame)."""
    m = eye_frame(pts, template)
    warped = cv2.warpAffine(img, m, CANVAS_SIZE, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    lightness = cv2.cvtColor(warped, cv2.COLOR_BGR2LAB)[..., 0] if warped.ndim == 3 else warped
    return lightness, (np.asarray(pts, np.float64) @ m[:, :2].T + m[:, 2]).astype(np.float32)


def _poly(pts: np.ndarray, idx: list[int]) -> np.ndarray:
    mask = np.zeros(CANVAS_SIZE[::-1], np.uint8)
    cv2.fillPoly(mask, [np.round(pts[idx]).astype(np.int32)], 1)
    return mask


def _lens_outlines(shape_x, shape_y, half_w, half_h, exponent, centre) -> tuple[np.ndarray, np.ndarray]:
    """Superellipse outlines (x, y: candidates x _OUTLINE_POINTS) around one eye's centre on the
    canvas; shape_x is a shift towards the temple (the left eye's temple is on the left)."""
    t = np.linspace(0, 2 * np.pi, _OUTLINE_POINTS, endpoint=False)
    c, s = np.cos(t)[None], np.sin(t)[None]
    power = 2 / exponent[:, None]
    x = centre[0] + shape_x[:, None] + half_w[:, None] * np.sign(c) * np.abs(c) ** power
    y = centre[1] + shape_y[:, None] + half_h[:, None] * np.sign(s) * np.abs(s) ** power
    return x, y


def _sample(evidence: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    h, w = evidence.shape
    xi, yi = np.round(x).astype(np.int64), np.round(y).astype(np.int64)
    inside = (xi >= 0) & (yi >= 0) & (xi < w) & (yi < h)
    return np.where(inside, evidence[np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)], 0.0)


# The outlines searched, once: (shift x, shift y, half width, half height, exponent) per row, no lens
# much taller than it is wide.
_LENS_GRID = np.array([(dx, dy, a, b, n) for dx, dy, a, b, n in itertools.product(
    LENS_SHIFT_X, LENS_SHIFT_Y, LENS_HALF_WIDTH, LENS_HALF_HEIGHT, LENS_EXPONENT) if b <= a + 0.04])


def _fit_lens(evidence: np.ndarray, centre: np.ndarray, temple: float) -> np.ndarray:
    """The best outline (x, y points) of the lens around the eye at ``centre``; temple: -1 where the
    temple is on the canvas's left, 1 on its right."""
    grid = _LENS_GRID
    d = float(EYE_DISTANCE)
    shift_x, shift_y = temple * grid[:, 0] * d, grid[:, 1] * d
    on = _lens_outlines(shift_x, shift_y, grid[:, 2] * d, grid[:, 3] * d, grid[:, 4], centre)
    within = _lens_outlines(shift_x, shift_y, grid[:, 2] * d * INSIDE_SCALE, grid[:, 3] * d * INSIDE_SCALE,
                            grid[:, 4], centre)
    score = _sample(evidence, *on).mean(1) - INSIDE_WEIGHT * _sample(evidence, *within).mean(1)
    best = int(np.argmax(score))
    return np.stack([on[0][best], on[1][best]], 1)


def frame_on_canvas(lightness: np.ndarray, canvas_pts: np.ndarray) -> np.ndarray:
    """The glasses on the canvas (bool): their frame, and dark lenses whole; all False where the face
    wears none (the module's docstring says how)."""
    light = lightness.astype(np.float32)
    thin = cv2.morphologyEx(lightness, cv2.MORPH_BLACKHAT,
                            cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (THIN_KERNEL,) * 2)).astype(np.float32)
    thick = cv2.morphologyEx(lightness, cv2.MORPH_BLACKHAT,
                             cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (THICK_KERNEL,) * 2)).astype(np.float32)
    d = float(EYE_DISTANCE)
    (x0, y0), mid = EYE_AT, EYE_AT[0] + d / 2
    yy, xx = np.mgrid[:lightness.shape[0], :lightness.shape[1]].astype(np.float32)

    def around_eyes(scale):
        return np.logical_or.reduce([((xx - cx) / (scale * ZONE_HALF_WIDTH * d)) ** 2
                                     + ((yy - y0) / (scale * ZONE_HALF_HEIGHT * d)) ** 2 <= 1 for cx in (x0, x0 + d)])

    eye_masks = [_poly(canvas_pts, EYE_IMAGE_LEFT) > 0, _poly(canvas_pts, EYE_IMAGE_RIGHT) > 0]
    eyes = cv2.dilate((eye_masks[0] | eye_masks[1]).astype(np.uint8),
                      cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))) > 0
    nose = (np.abs(xx - mid) < NOSE_HALF_WIDTH * d) & (yy > y0 + NOSE_BELOW * d)
    # Nothing above the brows: hair, a hat's brim.
    top = float(canvas_pts[BROW_IMAGE_LEFT + BROW_IMAGE_RIGHT, 1].min())
    zone = around_eyes(1.0) & ~eyes & ~nose & (yy >= top)
    # As dark as a black frame or a dark lens: against the cheeks below the lenses.
    cheeks = (yy > y0 + CHEEK_FROM * d) & ~nose & (np.abs(xx - mid) < d)
    dark = light < BLACK_SHARE * float(np.median(light[cheeks]))
    smooth = cv2.GaussianBlur(light, (0, 0), 1.0)
    slope_x = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3) / 4
    slope_y = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3) / 4

    weak = ((thin > THIN_WEAK) | (thick > THICK_WEAK)) & zone
    found = _rims(thin, thick, weak, zone, canvas_pts, np.abs(slope_y), (xx, yy))
    found |= _dark_lenses(dark & around_eyes(1.0) & ~nose, eye_masks, np.hypot(slope_x, slope_y))
    if not found.any():
        return found
    # With what is as dark and joined to it, a little beyond the zone: a cat-eye frame's tips, the
    # arms, a dark lens's bridge.
    near = dark & (thick > THICK_WEAK) & around_eyes(BLACK_REACH) & ~eyes & ~nose & (yy >= top - BLACK_ABOVE * d)
    return pieces_touching(near | found, found)


def _rims(thin, thick, weak, zone, canvas_pts, edges, grid) -> np.ndarray:
    """A frame's rims and bridge (bool; all False without a bridge): the gate, then the lines along
    the fitted lens outlines (the module's docstring, 3 and 4)."""
    xx, yy = grid
    d = float(EYE_DISTANCE)
    (x0, y0), mid = EYE_AT, EYE_AT[0] + d / 2
    nothing = np.zeros(zone.shape, bool)
    strong = ((thin > THIN_STRONG) | (thick > THICK_STRONG)) & zone
    if not strong.any():
        return nothing
    # The gate, on the lines less the brows.
    brows = cv2.dilate(_poly(canvas_pts, BROW_IMAGE_LEFT) | _poly(canvas_pts, BROW_IMAGE_RIGHT),
                       cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))) > 0
    count, pieces = cv2.connectedComponents((weak & ~brows).astype(np.uint8), connectivity=8)
    columns = np.abs(np.arange(zone.shape[1]) - mid) <= BRIDGE_HALF_WIDTH * d
    rows = (yy > y0 + BRIDGE_TOP * d) & (yy < y0 + BRIDGE_BOTTOM * d)
    candidates = np.unique(pieces[rows & columns[None] & strong & ~brows])
    bridges = []
    for i in candidates[candidates > 0]:
        piece = pieces == i
        crossing = (piece & rows)[:, columns]
        if crossing.any(0).mean() < BRIDGE_SHARE or np.median(crossing.sum(0)) > BRIDGE_MAX * d:
            continue
        beside = cv2.dilate(piece.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        if (np.where(beside & rows, edges, 0)[:, columns].max(0) > BRIDGE_EDGE).mean() < BRIDGE_SHARE:
            continue
        over = [piece[:, int(cx - OVER_EYE_HALF_WIDTH * d):int(cx + OVER_EYE_HALF_WIDTH * d) + 1].any(0).mean()
                for cx in (x0, x0 + d)]
        if min(over) >= OVER_EYE_SHARE:
            bridges.append(i)
    if not bridges:
        return nothing
    # The frame: the lines (brows included: a frame may run over them) along the fitted outlines.
    evidence = np.where(weak, np.clip(np.maximum(thin, thick), 0, THICK_STRONG) / THICK_STRONG, 0).astype(np.float32)
    evidence = cv2.dilate(evidence, np.ones((3, 3), np.uint8))
    band = np.zeros(zone.shape, np.uint8)
    for cx, temple in ((x0, -1.0), (x0 + d, 1.0)):
        outline = _fit_lens(evidence, np.array([cx, y0], np.float64), temple)
        cv2.polylines(band, [np.round(outline).astype(np.int32)], True, 1, max(1, int(round(FRAME_BAND * d))))
    bridge = np.isin(pieces, bridges) & (np.abs(xx - mid) <= NOSE_HALF_WIDTH * d)
    return (weak & (band > 0)) | bridge


def _dark_lenses(dark: np.ndarray, eye_masks: list[np.ndarray], slope: np.ndarray) -> np.ndarray:
    """Dark lenses (sunglasses), whole (bool; all False unless both eyes are behind one): the dark
    piece over each eye, most of the eye dark (an open eye's white is not), LENS_AREA times the
    eye's area at least, with a sharp edge against the skin (the median slope of lightness along
    its border at least LENS_EDGE: the shadow of a brow lit from above is soft)."""
    nothing = np.zeros(dark.shape, bool)
    lenses = np.zeros(dark.shape, np.uint8)
    for eye in eye_masks:
        if eye.sum() < 4 or dark[eye].mean() < LENS_DARK_SHARE:
            return nothing
        lens = pieces_touching(dark, eye)
        if lens.sum() < LENS_AREA * eye.sum():
            return nothing
        border = lens & ~(cv2.erode(lens.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
        if float(np.median(slope[border])) < LENS_EDGE:
            return nothing
        lenses |= lens.astype(np.uint8)
    # Whole: a lens's glare and the eye's own light inside it are the lens's.
    contours, _ = cv2.findContours(lenses, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(lenses, contours, -1, 1, thickness=cv2.FILLED)
    return lenses > 0


def frame_contrast(lightness: np.ndarray, frame: np.ndarray) -> float:
    """How much darker the frame's pixels are than the face around them on an eye canvas, as a share
    of the face's lightness there (the medians'; the same in a dim shot as in a bright one): a
    frame the face wears is dark against its skin, a place where the face wears none is not."""
    if not frame.any():
        return 0.0
    grown = cv2.dilate(frame.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    around = cv2.dilate(frame.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (11, 11))) > grown
    if not around.any():
        return 0.0
    skin = float(np.median(lightness[around]))
    return (skin - float(np.median(lightness[frame]))) / max(skin, 1.0)


def to_image(canvas_mask: np.ndarray, pts: np.ndarray, shape: tuple[int, int],
             template: np.ndarray | None = None) -> np.ndarray:
    """A canvas mask drawn back on an image of ``shape`` whose face has mesh ``pts``: float32, 1 on
    the frame, its edge soft over about a pixel."""
    if not canvas_mask.any():
        return np.zeros(shape, np.float32)
    m = eye_frame(pts, template)
    back = cv2.warpAffine(canvas_mask.astype(np.float32), cv2.invertAffineTransform(m), shape[::-1],
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    # The frame's own soft edge (a pixel or two, more on a face larger than the canvas) is the frame's.
    scale = max(1.0, 1.0 / float(np.hypot(*m[0, :2])))
    back = cv2.dilate(np.clip(back * 2, 0, 1), cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE, (2 * int(round(scale)) + 1,) * 2))
    return cv2.GaussianBlur(back, (0, 0), 0.7 * scale)


def glasses_mask(img: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """The glasses' frame on one image (float32, 1 on the frame; all 0 without glasses)."""
    lightness, canvas_pts = canvas_of(img, pts)
    return to_image(frame_on_canvas(lightness, canvas_pts), pts, img.shape[:2])


def without_glasses(img: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """The image with its face's glasses frame painted out (the image itself where the face wears
    none): the frame, closed over its shine and grown a little over its soft edge, is filled with
    the local mean of the face around it (a normalised Gaussian, FILL_SIGMA of the eye distance).
    Edge-propagating inpainting carried the frame's shine and its shadow in as white and grey
    blots; a local mean leaves no relief of its own for the swap's relight to bring over."""
    frame = glasses_mask(img, pts)
    if not frame.any():
        return img
    d = float(np.hypot(*(pts[EYE_IMAGE_RIGHT].mean(0) - pts[EYE_IMAGE_LEFT].mean(0))))

    def disc(share):
        r = max(1, int(round(share * d)))
        return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2)

    core = cv2.morphologyEx((frame > 0.5).astype(np.uint8), cv2.MORPH_CLOSE, disc(FILL_CLOSE))
    hole = cv2.dilate(core, disc(FILL_MARGIN)).astype(np.float32)
    around = 1.0 - hole
    sigma = FILL_SIGMA * d
    mean = (cv2.GaussianBlur(img.astype(np.float32) * around[..., None], (0, 0), sigma)
            / np.maximum(cv2.GaussianBlur(around, (0, 0), sigma), 1e-3)[..., None])
    soft = cv2.GaussianBlur(hole, (0, 0), 1.0)[..., None]
    return np.clip(np.round(img * (1 - soft) + mean * soft), 0, 255).astype(np.uint8)
