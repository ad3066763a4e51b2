"""What covers a tracked face, found from the face itself over time: the offline backend's
occlusion mask, with nothing downloaded.

A hand, a cup or a microphone in front of a face must stay in front of the swapped face. The
offline backend has no learned occlusion model, so it reads the occluder off the track:

1. **A canonical frame.** Every face of a track is warped piecewise-affinely over its dense mesh
   (facepipe.models.face_mesh, 468 points) onto one small canvas (CANVAS px square) laid out from the track's
   median mesh: a point of the face (the tip of the nose, a spot on the left cheek) lands on the
   same canvas pixel in every frame, however the head moves or the mouth opens.
2. **The face's own appearance.** The per-pixel median (and its spread) over samples spread along
   the track is what the face looks like there: an object that passes in front of the face
   covers each part of it in a minority of the samples, and the median does not see it.
3. **Two tests per pixel.** A pixel is occluded where it differs from that appearance by more
   than the face's own variation (a hand of skin colour is found this way: it is not *this*
   part of *this* face), or where its colour is far from the face's skin, read robustly on the
   upper half of the face (a dark or coloured object, even one that stays in front of the face
   for most of the track, which the median would take for the face).
4. **Whole objects.** Strong evidence seeds a region that grows through weaker evidence
   (hysteresis), each region is closed to its convex hull (an object is solid: the coffee
   inside a cup, a part of the mesh the object hides), and the mask is dilated a little, so an
   object's edge is never painted over.

The mask is drawn back on the face crop through the same mesh. Where it is 1, the swap keeps
the target's pixels (`keep_occluded`). Known limit: an object of skin colour that stays over the
same part of the face for most of a track looks like the face to both tests.
"""

from __future__ import annotations

import cv2
import numpy as np

from facepipe.models import glasses
from facepipe.models.mesh_swap import EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT, LIPS_OUTER, triangles
from facepipe.models.piecewise import piecewise_maps, signed_areas, triangle_affines, triangle_ids

# The canonical canvas's side: enough for a hand's fingers, small enough that a face costs ~1 ms.
CANVAS = 64
# Samples of a track the appearance is read from (spread evenly along it).
SAMPLES = 48
# Its glasses (facepipe.models.glasses) are read from one sample in this many: a frame stays put on
# the face, and ten samples' median clears what passes in front of it (the median of all 48 eye
# canvases took 40 ms a track).
GLASSES_EVERY = 5
# A face of the track wears the track's glasses where their frame is darker than the face around it
# (glasses.frame_contrast, relative to the face's lightness) by at least this share of the samples'
# median's contrast: glasses taken off within a track are kept only on the faces that wear them.
# Grace Hopper turned from -40 to 40 degrees: 0.35-1.08 of it (0.35 at 40 degrees, where the canvas
# misplaces the rims a little); blurred by 2-4 px, dimmed to 0.4 of her light or brightened 1.5
# times, at three sizes: 0.60-1.14; the astronaut with drawn glasses taken off: 0.02.
FRAME_WORN = 0.2
# How much the lightness counts against the colour in the difference from the appearance: light
# changes more than colour over a track (a turn towards a lamp), an object's colour does not.
LIGHTNESS_WEIGHT = 0.7
# A difference counts in units of (SPREAD_GAIN x the pixel's own median variation + NOISE_FLOOR),
# Lab units: the face's own movement (blinks, speech, compression) stays under one.
SPREAD_GAIN = 1.5
NOISE_FLOOR = 6.0
# Skin colour distance, in robust standard deviations of the face's upper-half skin, that counts
# as one unit of evidence; and the share of the canvas (from the top) that half is.
COLOUR_UNIT = 4.0
UPPER_SHARE = 0.55
SKIN_SPREAD_FLOOR = np.array([4.0, 2.0, 2.0], np.float32)
# Hysteresis: evidence above SEED starts an object, above GROW extends it.
SEED = 1.6
GROW = 0.9
# Regions smaller than this (canvas pixels) are noise, not objects.
MIN_REGION = 12
# Dilation of the final mask on the canvas (pixels): an object's soft edge stays the target's.
DILATE = 3
# A face partly out of the frame: the mesh reads the part it sees less well (on a pan past the
# frame's edge, its points 3-6 px off on a 200 px face with 5-17% of it out, against 1-1.5 px
# whole), and the face's own eyes, brows and lips, a little misplaced on the canvas, differed from
# its appearance over most of the face (0.43-0.52 of the canvas masked, nothing in front). There a
# pixel's difference is the least over the appearance within this many canvas pixels (about 3 px
# of such a face): 0.00-0.09 masked, along the cut edge. An object still differs from every part
# of the face near it: of a skin-coloured hand over a face cut at the eye 0.950 of its pixels are
# kept (0.997 without the slack, 0.861 with 2 px of it), of a cup 0.992, of dark fabric 1.000.
CUT_SLACK = 1


def _affines(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The affine map of every triangle src[i] -> dst[i], (n, 2, 3), plus an all-zero last entry
    for pixels outside every triangle (piecewise.triangle_affines: a degenerate triangle's map is
    all zero too, a nearly degenerate one's finite)."""
    maps = triangle_affines(src, dst)
    return np.concatenate([np.nan_to_num(maps), np.zeros((1, 2, 3), np.float32)])


def _triangle_ids(points: np.ndarray, triangles: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return triangle_ids(np.round(points[triangles]).astype(np.int32), shape)


def _remap_through(maps: np.ndarray, ids: np.ndarray, image: np.ndarray, **kwargs) -> tuple[np.ndarray, np.ndarray,
                                                                                          np.ndarray]:
    map_x, map_y = piecewise_maps(maps, ids)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, **kwargs), map_x, map_y


def _upright(points: np.ndarray) -> np.ndarray:
    """A mesh with its centroid at 0, its RMS radius 1 and its eyes level."""

    p = points - points.mean(0)
    p = p / max(float(np.sqrt((p ** 2).sum(1).mean())), 1e-6)
    left, right = points[EYE_IMAGE_LEFT].mean(0), points[EYE_IMAGE_RIGHT].mean(0)
    angle = float(np.arctan2(right[1] - left[1], right[0] - left[0]))
    c, s = np.cos(-angle), np.sin(-angle)
    return p @ np.array([[c, s], [-s, c]], np.float32)


def _nan_median(stack: np.ndarray) -> np.ndarray:
    """The median over axis 0 ignoring NaN (NaN where no value), as np.nanmedian gives it, by one
    sort (NaN sorts last): ten times faster than np.nanmedian on a track's samples."""
    ordered = np.sort(stack, 0)
    count = np.isfinite(ordered).sum(0)
    # The middle value, or the mean of the two middle values of an even count.
    low = np.take_along_axis(ordered, np.maximum((count - 1) // 2, 0)[None], 0)[0]
    high = np.take_along_axis(ordered, np.minimum(count // 2, len(stack) - 1)[None], 0)[0]
    return np.where(count > 0, (low + high) / 2, np.nan).astype(np.float32)


def canvas_layout(meshes: list[np.ndarray]) -> np.ndarray:
    """A track's canonical layout: its median upright mesh, fitted into the canvas."""
    median = np.median(np.stack([_upright(np.asarray(m, np.float32)) for m in meshes]), 0)
    lo, hi = median.min(0), median.max(0)
    scale = (CANVAS - 4) / float((hi - lo).max())
    return ((median - lo) * scale + 2 + ((CANVAS - 4) - (hi - lo) * scale) / 2).astype(np.float32)


class TrackAppearance:
    """One track's face in its canonical frame: its median look and its skin colour, and the
    occlusion mask of any of its faces (the module's docstring says how)."""

    def __init__(self, meshes: list[np.ndarray]):
        self.triangles = triangles()
        self.layout = canvas_layout(meshes)
        self.canvas_ids = _triangle_ids(self.layout, self.triangles, (CANVAS, CANVAS))
        self.layout_signs = np.sign(signed_areas(self.layout[self.triangles]))
        features = np.zeros((CANVAS, CANVAS), np.uint8)
        for contour in (EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT, LIPS_OUTER):
            cv2.fillPoly(features, [np.round(self.layout[contour]).astype(np.int32)], 1)
        # Eyes and mouth change with the expression; they are not skin.
        self.skin = (self.canvas_ids >= 0) & (cv2.dilate(features, np.ones((3, 3), np.uint8)) == 0)
        self.samples: list[np.ndarray] = []
        # The eyes' canvas of each sample (facepipe.models.glasses) and the mesh on it: the glasses'
        # frame, read once from their median, is drawn on every face of the track.
        self.eye_template = glasses.track_template(meshes)
        self.eye_samples: list[np.ndarray] = []
        self.eye_points: list[np.ndarray] = []
        self.appearance = None
        self.frame = None

    def texture(self, crop: np.ndarray, mesh: np.ndarray) -> np.ndarray:
        """The face of `crop` (its mesh in the crop's pixels) on the canvas, as Lab float32, NaN
        where the crop does not show it (outside the crop, or a triangle turned away)."""
        mesh = np.asarray(mesh, np.float32)
        maps = _affines(self.layout[self.triangles], mesh[self.triangles])
        warped, map_x, map_y = _remap_through(maps, self.canvas_ids, crop, borderMode=cv2.BORDER_REPLICATE)
        turned = np.append(np.sign(signed_areas(mesh[self.triangles])) != self.layout_signs, True)
        seen = ((self.canvas_ids >= 0) & ~turned[self.canvas_ids] & (map_x >= 0) & (map_y >= 0)
                & (map_x <= crop.shape[1] - 1) & (map_y <= crop.shape[0] - 1))
        lab = cv2.cvtColor(warped, cv2.COLOR_BGR2LAB).astype(np.float32)
        lab[~seen] = np.nan
        return lab

    def add_sample(self, crop: np.ndarray, mesh: np.ndarray) -> None:
        if len(self.samples) % GLASSES_EVERY == 0:
            lightness, points = glasses.canvas_of(crop, np.asarray(mesh, np.float32), self.eye_template)
            self.eye_samples.append(lightness)
            self.eye_points.append(points)
        self.samples.append(self.texture(crop, mesh).astype(np.float16))
        self.appearance = None

    def _settle(self) -> None:
        self.appearance = self._appearance_of(np.stack(self.samples).astype(np.float32))
        # Glasses stay in front of the face for the whole track: the median's frame, the same on every
        # face of it (a frame read face by face would flicker).
        eyes = np.median(np.stack(self.eye_samples), 0).astype(np.uint8)
        self.frame = glasses.frame_on_canvas(eyes, np.median(np.stack(self.eye_points), 0))
        self.frame_contrast = glasses.frame_contrast(eyes, self.frame)
        # The frame on this canvas. On a face that does not wear it (glasses taken off within the
        # track) the difference from the appearance is not read there: glasses worn over most of a
        # track are the appearance there, and the face showing again differed from it along the
        # rims, which closed to its hull kept the whole upper face of the target.
        self.frame_on_layout = None
        if self.frame.any():
            on_layout = glasses.to_image(self.frame, self.layout, (CANVAS, CANVAS), self.eye_template) > 0.1
            self.frame_on_layout = cv2.dilate(on_layout.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0

    def _appearance_of(self, stack: np.ndarray) -> tuple:
        median = _nan_median(stack)
        spread = _nan_median(np.abs(stack - median))
        upper = self.skin & (np.arange(CANVAS)[:, None] < CANVAS * UPPER_SHARE)
        skin = stack[:, upper].reshape(-1, 3)
        skin = skin[np.isfinite(skin).all(1)]
        if len(skin) < 16:
            skin = stack[:, self.skin].reshape(-1, 3)
            skin = skin[np.isfinite(skin).all(1)]
        centre = np.median(skin, 0) if len(skin) else np.full(3, 128, np.float32)
        scale = (1.4826 * np.median(np.abs(skin - centre), 0) if len(skin) else 0) + SKIN_SPREAD_FLOOR
        weights = np.array([LIGHTNESS_WEIGHT, 1.0, 1.0], np.float32)
        return median, np.sqrt(((np.nan_to_num(spread) * weights) ** 2).sum(-1)), centre, scale, weights

    def canvas_mask(self, crop: np.ndarray, mesh: np.ndarray, frame_worn: bool = True) -> np.ndarray:
        """The face's occlusion on the canvas: uint8, 1 where something covers it. frame_worn=False:
        the track's glasses, if it has any, are not on this face (frame_worn)."""
        if self.appearance is None:
            self._settle()
        mesh = np.asarray(mesh, np.float32)
        # The crop holds the whole face with a margin, unless the frame's edge cuts it.
        cut = bool((mesh.min(0) < 0).any() or (mesh.max(0) > np.array(crop.shape[1::-1]) - 1).any())
        return self._mask_of(self.texture(crop, mesh), CUT_SLACK if cut else 0,
                             None if frame_worn else self.frame_on_layout)  # None without glasses

    def frame_worn(self, crop: np.ndarray, mesh: np.ndarray) -> bool:
        """Whether this face of the track wears the track's glasses: their frame is darker than the
        face around it by FRAME_WORN of the samples' median's contrast (False without glasses)."""
        if self.appearance is None:
            self._settle()
        if not self.frame.any():
            return False
        lightness, _ = glasses.canvas_of(crop, np.asarray(mesh, np.float32), self.eye_template)
        return glasses.frame_contrast(lightness, self.frame) >= FRAME_WORN * self.frame_contrast

    def _difference(self, lab: np.ndarray, slack: int) -> np.ndarray:
        """Each canvas pixel's difference from the face's appearance, in units (SPREAD_GAIN, NOISE_FLOOR);
        with slack, the least over the appearance within that many pixels (0 where none is known)."""
        median, spread, _, _, weights = self.appearance
        pad = ((slack, slack), (slack, slack))
        medians = np.pad(median, pad + ((0, 0),), constant_values=np.nan)
        spreads = np.pad(spread, pad, constant_values=np.nan)
        least = np.full(lab.shape[:2], np.nan, np.float32)
        for dy in range(2 * slack + 1):
            for dx in range(2 * slack + 1):
                near = medians[dy:dy + CANVAS, dx:dx + CANVAS]
                units = SPREAD_GAIN * spreads[dy:dy + CANVAS, dx:dx + CANVAS] + NOISE_FLOOR
                least = np.fmin(least, np.sqrt((((lab - near) * weights) ** 2).sum(-1)) / units)
        return np.nan_to_num(least, nan=0.0)

    def _mask_of(self, lab: np.ndarray, slack: int = 0, bare: np.ndarray | None = None) -> np.ndarray:
        """bare: canvas pixels where the face does not wear what its appearance shows (glasses taken
        off), where only the colour test counts."""
        _, _, skin_centre, skin_scale, weights = self.appearance
        seen = np.isfinite(lab).all(-1)
        lab = np.nan_to_num(lab)
        difference = self._difference(lab, slack)
        colour = np.sqrt((((lab - skin_centre) / skin_scale) ** 2).sum(-1)) / COLOUR_UNIT
        if bare is not None:
            difference = np.where(bare, 0, difference)
        evidence = np.where(seen, np.maximum(difference, colour), 0).astype(np.float32)
        evidence = cv2.GaussianBlur(evidence, (0, 0), 1.0)
        count, regions, stats, _ = cv2.connectedComponentsWithStats((evidence > GROW).astype(np.uint8))
        seeded = np.zeros(count, bool)
        seeded[np.unique(regions[evidence > SEED])] = True
        seeded[0] = False
        mask = np.zeros((CANVAS, CANVAS), np.uint8)
        for i in np.flatnonzero(seeded):
            if stats[i, cv2.CC_STAT_AREA] >= MIN_REGION:
                ys, xs = np.nonzero(regions == i)
                cv2.fillConvexPoly(mask, cv2.convexHull(np.stack([xs, ys], 1).astype(np.int32)), 1)
        return cv2.dilate(mask, np.ones((DILATE, DILATE), np.uint8))

    def mask(self, crop: np.ndarray, mesh: np.ndarray) -> np.ndarray:
        """The face's occlusion on the crop: float32 in [0, 1], 1 where something covers the face
        (its glasses' frame included)."""
        worn = self.frame_worn(crop, mesh)
        canvas = self.canvas_mask(crop, mesh, worn)
        mesh = np.asarray(mesh, np.float32)
        frame = (glasses.to_image(self.frame, mesh, crop.shape[:2], self.eye_template) if worn
                 else np.zeros(crop.shape[:2], np.float32))
        if not canvas.any():
            return frame
        x0, y0, w, h = cv2.boundingRect(np.round(mesh).astype(np.int32))
        x0, y0 = max(0, x0), max(0, y0)
        x1, y1 = min(crop.shape[1], x0 + w + 1), min(crop.shape[0], y0 + h + 1)
        out = np.zeros(crop.shape[:2], np.float32)
        if x1 <= x0 or y1 <= y0:
            return frame
        local = mesh - np.array([x0, y0], np.float32)
        ids = _triangle_ids(local, self.triangles, (y1 - y0, x1 - x0))
        maps = _affines(local[self.triangles], self.layout[self.triangles])
        drawn, _, _ = _remap_through(maps, ids, canvas.astype(np.float32), borderMode=cv2.BORDER_CONSTANT,
                                     borderValue=0)
        drawn[ids < 0] = 0
        out[y0:y1, x0:x1] = drawn
        return np.maximum(np.clip(out, 0, 1), frame)


def sample_frames(frames: list[int], count: int = SAMPLES) -> set[int]:
    """Up to `count` frames spread evenly over a track's frames."""
    frames = sorted(frames)
    if len(frames) <= count:
        return set(frames)
    return {frames[int(round(i))] for i in np.linspace(0, len(frames) - 1, count)}


def keep_occluded(patch, crop: np.ndarray, crop_x: int, crop_y: int, occlusion: np.ndarray) -> np.ndarray:
    """Put the target's own pixels back into a "pixels" patch where `occlusion` (on the crop at
    crop_x, crop_y in the frame) says something covers the face, in place. Returns what was kept
    over the patch's rectangle (float32, 1 = the target's pixels), for the mask's debug view."""
    px, py = patch.x - crop_x, patch.y - crop_y
    h, w = patch.image.shape[:2]
    kept = np.zeros((h, w), np.float32)
    # The part of the patch the crop shows (a swap pastes inside the crop it was given).
    x0, y0 = max(px, 0), max(py, 0)
    x1, y1 = min(px + w, crop.shape[1]), min(py + h, crop.shape[0])
    if x1 <= x0 or y1 <= y0:
        return kept
    weight = occlusion[y0:y1, x0:x1]
    if not weight.any():
        return kept
    kept[y0 - py:y1 - py, x0 - px:x1 - px] = weight
    image = patch.image.copy()
    region = image[y0 - py:y1 - py, x0 - px:x1 - px].astype(np.float32)
    mixed = region * (1 - weight[..., None]) + crop[y0:y1, x0:x1].astype(np.float32) * weight[..., None]
    image[y0 - py:y1 - py, x0 - px:x1 - px] = np.clip(np.round(mixed), 0, 255).astype(np.uint8)
    patch.image = image
    return kept
