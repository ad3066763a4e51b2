"""What a viewer sees of the offline dense-mesh swap (facepipe.models.mesh_swap), measured on real photos
shipped in installed packages (insightface's t1.jpg, scikit-image's astronaut) and on turned
versions of them: no blotches, no colour from an empty part of the warp, no seams, the source's
face shape with the target's expression.

Turned faces are made by wrapping the photo around a vertical cylinder through the face (radius
0.6 of the face's width) and turning it: the near half widens, the far half narrows and its edge
goes out of sight, as a head turning would (turn_face); MediaPipe's mesh of such a face has the
far half's triangles folded over.

Each measured figure is printed (pytest -s shows them) and held to a bound with a margin on what
was measured.
"""

import cv2
import numpy as np
import pytest

from facepipe.models import mesh_swap, piecewise
from facepipe.models.classic_swap import source_patch
from facepipe.models.mesh_swap import MeshSwapper
from tests.model_helpers import swap_frame, turn_face

TURNS = (-60, -40, -20, 0, 20, 40, 60)
# The pure colour the source crop is painted outside its face oval: no face has it, so any of it
# in a result came from outside the source's face (an empty part of the warp).
SENTINEL = (255, 0, 255)
# A blotch's pixels (blotch_share): flat (local lightness deviation under this) and far from both
# faces' skin (robust z-score over this).
BLOTCH_FLAT = 4.0
BLOTCH_Z = 3.0


@pytest.fixture(scope="module")
def analyzer(mesh_analyzer):
    return mesh_analyzer


def largest(faces):
    return max(faces, key=lambda f: np.ptp(f["landmarks"][:, 0]) * np.ptp(f["landmarks"][:, 1]))


def source_face_mask(crop: np.ndarray, crop_pts: np.ndarray) -> np.ndarray:
    """The source's face as the camera sees it: its mesh's triangles that face the camera (the oval's
    outline alone would not do: on a turned face its far side runs across the visible cheek)."""
    tris = mesh_swap.triangles()
    area = piecewise.signed_areas(crop_pts[tris])
    face = np.zeros(crop.shape[:2], np.uint8)
    for tri in tris[area * np.sign(area.sum()) > 1e-2]:
        cv2.fillConvexPoly(face, np.round(crop_pts[tri]).astype(np.int32), 1)
    return face > 0


def painted_source(img: np.ndarray, pts: np.ndarray):
    """The source's crop and points, with everything more than two pixels outside its face the
    sentinel colour: a triangle is rasterised from its corners rounded to whole pixels, so a pixel
    on its edge maps up to about a pixel past the source's triangle, and the bilinear warp reads
    one pixel further."""
    crop, crop_pts = source_patch(img, pts)
    crop = crop.copy()
    face = cv2.dilate(source_face_mask(crop, crop_pts).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    crop[~face] = SENTINEL
    return crop, crop_pts


def sentinel_pixels(result: np.ndarray, target: np.ndarray) -> int:
    """Pixels of the result tinted towards the sentinel colour that the target did not have:
    magenta-ward (red and blue both well above green)."""
    def tinted(img):
        b, g, r = (img[..., i].astype(int) for i in range(3))
        return (r - g > 60) & (b - g > 60)
    return int((tinted(result) & ~tinted(target)).sum())


def skin_stats(img: np.ndarray, pts: np.ndarray):
    """The median and robust spread (1.4826 MAD, floored) of a face's skin in Lab: its oval shrunk
    by 15% of the face's width (no hair, no background), less its eyes, brows and mouth."""
    face_w = float(np.ptp(pts[:, 0]))
    r = max(1, int(0.15 * face_w))
    region = cv2.erode(mesh_swap._poly_mask(pts, mesh_swap.FACE_OVAL, img.shape[:2]),
                       cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2)) > 0
    for part in (mesh_swap.EYE_IMAGE_LEFT, mesh_swap.EYE_IMAGE_RIGHT, mesh_swap.LIPS_OUTER,
                 mesh_swap.BROW_IMAGE_LEFT, mesh_swap.BROW_IMAGE_RIGHT):
        region &= cv2.dilate(mesh_swap._poly_mask(pts, part, img.shape[:2]), np.ones((5, 5), np.uint8)) == 0
    px = cv2.cvtColor(img, cv2.COLOR_BGR2LAB)[region].astype(np.float32)
    med = np.median(px, axis=0)
    return med, np.maximum(1.4826 * np.median(np.abs(px - med), axis=0), [4.0, 2.0, 2.0])


def blotch_share(result: np.ndarray, target: np.ndarray, target_pts: np.ndarray, source: np.ndarray,
                 source_pts: np.ndarray) -> float:
    """Blotches: the share of the face covered by flat patches of a wrong tone in the pasted
    region. A pixel counts when (1) the swap changed it, (2) its neighbourhood is flat (the local
    standard deviation of Lab lightness in 7 x 7 under BLOTCH_FLAT: no skin texture, no edge), and
    (3) its colour lies far from both the target's skin and the source's skin (skin_stats; the
    largest robust z-score of its Lab channels over BLOTCH_Z to each); only connected patches of at least 0.2% of
    the face count (an odd pixel is noise, a patch is what a viewer sees)."""
    face = mesh_swap._poly_mask(target_pts, mesh_swap.FACE_OVAL, target.shape[:2]) > 0
    lab = cv2.cvtColor(result, cv2.COLOR_BGR2LAB).astype(np.float32)
    z = np.full(face.shape, np.inf, np.float32)
    for med, spread in (skin_stats(target, target_pts), skin_stats(source, source_pts)):
        z = np.minimum(z, np.abs((lab - med) / spread).max(axis=2))
    light = lab[..., 0]
    local_sd = np.sqrt(np.maximum(cv2.blur(light ** 2, (7, 7)) - cv2.blur(light, (7, 7)) ** 2, 0))
    changed = np.abs(result.astype(int) - target.astype(int)).sum(axis=2) > 0
    candidate = (changed & face & (local_sd < BLOTCH_FLAT) & (z > BLOTCH_Z)).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(candidate, connectivity=8)
    least = max(4, int(0.002 * face.sum()))
    area = sum(int(stats[i, cv2.CC_STAT_AREA]) for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= least)
    return area / max(int(face.sum()), 1)


def border_bands(swapper: MeshSwapper, pts: np.ndarray, shape) -> dict[str, np.ndarray]:
    """Where a paste's edge would show, as bands 5% of the face wide: across the face oval (its
    sides and chin), across the forehead (the oval's top, pulled down to above the brows), and
    around the kept eyes and mouth."""
    oval, keep = swapper.masks(pts, shape)
    r = max(2, int(0.025 * np.ptp(pts[:, 0])))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2)

    def band(mask):
        return (cv2.dilate(mask, kernel) > 0) & ~(cv2.erode(mask, kernel) > 0)

    brow_y = pts[[mesh_swap.MID_BROW] + mesh_swap.BROW_IMAGE_LEFT + mesh_swap.BROW_IMAGE_RIGHT, 1].min()
    rows = np.arange(shape[0])[:, None] < brow_y
    edge = band(oval)
    return {"oval": edge & ~rows, "forehead": edge & rows, "eyes and mouth": band(keep)}


def edge_strength(img: np.ndarray, region: np.ndarray) -> float:
    """Mean gradient magnitude of the Lab lightness (Sobel, after a 1-px Gaussian) over a region."""
    light = cv2.GaussianBlur(cv2.cvtColor(img, cv2.COLOR_BGR2LAB)[..., 0].astype(np.float32), (0, 0), 1.0)
    gx, gy = cv2.Sobel(light, cv2.CV_32F, 1, 0), cv2.Sobel(light, cv2.CV_32F, 0, 1)
    return float(np.hypot(gx, gy)[region].mean())


@pytest.fixture(scope="module")
def turned(analyzer, t1, astronaut):
    """The astronaut turned by each of TURNS, with its face found again (None where it is not)."""
    pts = largest(analyzer.analyze(astronaut, embed=False))["landmarks"]
    out = {}
    for degrees in TURNS:
        img = turn_face(astronaut, pts, degrees)
        faces = analyzer.analyze(img, embed=False)
        out[degrees] = (img, largest(faces)["landmarks"] if faces else None)
    return out


# -- the mirror map -----------------------------------------------------------------------------


def test_the_mirror_map_is_the_meshs_left_right_correspondence(analyzer, astronaut):
    mirror = mesh_swap.mirror_map()
    assert np.array_equal(mirror[mirror], np.arange(mesh_swap.NUM_POINTS))
    for a, b in ((33, 263), (61, 291), (234, 454), (70, 300), (1, 1), (152, 152)):
        assert mirror[a] == b and mirror[b] == a
    assert set(mirror[mesh_swap.MIDLINE]) == set(mesh_swap.MIDLINE)
    # Read again off the astronaut's own (frontal) mesh, it is the stored one.
    derived = mesh_swap.mirror_map_of(largest(analyzer.analyze(astronaut, embed=False))["landmarks"])
    assert np.array_equal(derived, mirror)
    # The triangles, wound one way: a frontal face's triangles all face the camera.
    area = piecewise.signed_areas(largest(analyzer.analyze(astronaut, embed=False))["landmarks"][mesh_swap.triangles()])
    assert (np.sign(area) == np.sign(area.sum())).mean() > 0.95


# -- blotches and empty warps -------------------------------------------------------------------


def test_turned_faces_get_no_blotch_and_nothing_from_an_empty_warp(turned, analyzer, t1):
    """Targets turned 0-60 degrees both ways (the astronaut), and sources turned too (t1's right
    woman, turned 40 degrees both ways, so the source's far half is folded over and is filled from
    its mirror image): no pixel takes the sentinel colour painted outside the source's face, and
    the blotch share stays under 0.5% of the face."""
    src_img = t1
    src_pts = largest([f for f in analyzer.analyze(t1, embed=False) if f["landmarks"][:, 0].mean() > 1000])["landmarks"]
    sources = {"frontal": (src_img, src_pts)}
    for degrees in (-40, 40):
        img = turn_face(src_img, src_pts, degrees)
        faces = [f for f in analyzer.analyze(img, embed=False)
                 if abs(f["landmarks"][:, 0].mean() - src_pts[:, 0].mean()) < 80]
        if faces:
            sources[f"turned {degrees}"] = (img, largest(faces)["landmarks"])
    assert len(sources) == 3
    found = [d for d, (_, p) in turned.items() if p is not None]
    print(f"\nturned targets with a face found: {found} of {list(TURNS)}")
    assert len(found) >= 6
    figures = {}
    for name, (img, pts) in sources.items():
        crop, crop_pts = painted_source(img, pts)
        swapper = MeshSwapper(crop, crop_pts)
        plain, plain_pts = source_patch(img, pts)
        for degrees in found:
            target, tpts = turned[degrees]
            out = swap_frame(swapper, target, [{"landmarks": tpts}])
            # The blotch share on the real source (the sentinel is a blotch by design).
            real = swap_frame(MeshSwapper(plain, plain_pts), target, [{"landmarks": tpts}])
            blotch = round(100 * blotch_share(real, target, tpts, plain, plain_pts), 2)
            figures[(name, degrees)] = (sentinel_pixels(out, target), blotch)
    print("(source, target turn): (sentinel pixels, blotch % of the face)", figures)
    assert all(s == 0 for s, _ in figures.values())
    assert all(b < 0.5 for _, b in figures.values())


def poorly_seen(source_pts: np.ndarray, target_pts: np.ndarray) -> np.ndarray:
    """Per triangle, whether the source sees it at under 0.3 of the share of its best-seen side (it
    or its mirror image, by area; 0 where it faces away) that the target sees it at: a strongly
    turned source's far cheek and nose flank, squeezed into slivers."""
    tris = mesh_swap.triangles()
    key = {tuple(sorted(t)): i for i, t in enumerate(tris.tolist())}
    mirror = np.array([key.get(tuple(sorted(t)), i) for i, t in enumerate(mesh_swap.mirror_map()[tris].tolist())])

    def view(pts):
        area = piecewise.signed_areas(pts[tris].astype(np.float64))
        area = np.where(area * np.sign(area.sum()) > 1e-2, np.abs(area), 0.0)
        return area / np.maximum(np.maximum(area, area[mirror]), 1e-6)

    return view(source_pts) < 0.3 * view(target_pts)


def test_a_turned_sources_poorly_seen_side_keeps_the_targets_pixels(analyzer, t1, astronaut):
    """t1's near-profile faces (turned over 0.7, tools/identity_benchmark.py's faces 2 and 5) as
    sources on the astronaut: where the source sees a triangle poorly (poorly_seen), its pixels
    warped up read as a jagged white patch beside the nose and orange shards on the far cheek. There
    the result keeps (nearly) the astronaut's own pixels: the mean change over those triangles is
    under 5 (0-255, the largest channel's) and under 5% of their pixels change by over 20 (measured:
    1.1 and 1.5, 0.3% and 0.6%; 14.5 and 13.5, 26% and 22% before the paste faded there)."""
    target_pts = largest(analyzer.analyze(astronaut, embed=False))["landmarks"]
    sources = [f["landmarks"] for f in analyzer.analyze(t1, embed=False)
               if mesh_swap.turn_of(f["landmarks"]) > 0.7]
    assert len(sources) == 2
    oval = mesh_swap._poly_mask(target_pts, mesh_swap.FACE_OVAL, astronaut.shape[:2]) > 0
    changed = {}
    for pts in sources:
        crop, crop_pts = source_patch(t1, pts)
        out = swap_frame(MeshSwapper(crop, crop_pts), astronaut, [{"landmarks": target_pts}])
        poor = np.zeros(astronaut.shape[:2], np.uint8)
        for tri in mesh_swap.triangles()[poorly_seen(crop_pts, target_pts)]:
            cv2.fillConvexPoly(poor, np.round(target_pts[tri]).astype(np.int32), 1)
        region = (poor > 0) & oval
        assert region.sum() > 200  # the far side is there to test
        diff = np.abs(out.astype(np.float32) - astronaut.astype(np.float32)).max(axis=2)
        changed[round(mesh_swap.turn_of(pts), 2)] = (round(float(diff[region].mean()), 1),
                                                     round(100 * float((diff[region] > 20).mean()), 1))
    print("\nturn of the source: its poorly seen side's mean change (0-255), % changed over 20", changed)
    assert all(mean < 5.0 and share < 5.0 for mean, share in changed.values()), changed


# -- seams ----------------------------------------------------------------------------------------


def test_no_seam_at_the_oval_the_forehead_or_around_the_eyes_and_mouth(analyzer, t1, astronaut):
    """t1's six faces, the astronaut as the source: the edge strength over bands across the paste's
    border is within 20% of the photo's own at the same places (median over the faces), and no face
    has blotches over 1% of it."""
    src = largest(analyzer.analyze(astronaut, embed=False))
    swapper = MeshSwapper(*source_patch(astronaut, src["landmarks"]))
    crop, crop_pts = source_patch(astronaut, src["landmarks"])
    ratios = {"oval": [], "forehead": [], "eyes and mouth": []}
    blotches = []
    for face in analyzer.analyze(t1, embed=False):
        out = swap_frame(swapper, t1, [face])
        for place, band in border_bands(swapper, face["landmarks"], t1.shape[:2]).items():
            ratios[place].append(edge_strength(out, band) / edge_strength(t1, band))
        blotches.append(round(100 * blotch_share(out, t1, face["landmarks"], crop, crop_pts), 2))
    medians = {place: round(float(np.median(r)), 3) for place, r in ratios.items()}
    print("\nedge strength across the paste's border / the photo's, median of t1's faces:", medians,
          "\nper face:", {place: np.round(r, 2).tolist() for place, r in ratios.items()},
          "\nblotch % of each face:", blotches)
    assert all(0.8 <= m <= 1.2 for m in medians.values()), medians
    assert max(blotches) < 1.0


# The upper lids (a brow's lower edge to its eye's upper contour) and the cheeks, as mesh polygons.
UPPER_LIDS = ([46, 53, 52, 65, 55, 133, 173, 157, 158, 159, 160, 161, 246, 33],
              [276, 283, 282, 295, 285, 362, 398, 384, 385, 386, 387, 388, 466, 263])
CHEEKS = ([117, 118, 101, 36, 205, 187, 147, 123], [346, 347, 330, 266, 425, 411, 376, 352])


def lid_excess(result: np.ndarray, target: np.ndarray, pts: np.ndarray) -> float:
    """Pale lids: how much more the swap lightened the upper lids than the cheeks (median change of
    Lab lightness, 0-255, over each region of the target's mesh). An open-eyed source's lit lids
    stretched over a squint read as pale arcs between the brows and the eyes."""
    change = (cv2.cvtColor(result, cv2.COLOR_BGR2LAB)[..., 0].astype(np.float32)
              - cv2.cvtColor(target, cv2.COLOR_BGR2LAB)[..., 0].astype(np.float32))

    def median_over(polygons):
        mask = np.zeros(target.shape[:2], np.uint8)
        for poly in polygons:
            cv2.fillPoly(mask, [np.round(pts[poly]).astype(np.int32)], 1)
        return float(np.median(change[mask > 0]))

    return median_over(UPPER_LIDS) - median_over(CHEEKS)


def astronaut_on_t1s_faces(analyzer, t1, astronaut, measure) -> list[float]:
    """measure(result, target, target points) of the astronaut swapped onto each of t1's faces in
    turn, from the left."""
    src = largest(analyzer.analyze(astronaut, embed=False))
    swapper = MeshSwapper(*source_patch(astronaut, src["landmarks"]))
    values = []
    for face in sorted(analyzer.analyze(t1, embed=False), key=lambda f: f["landmarks"][:, 0].mean()):
        values.append(measure(swap_frame(swapper, t1, [face]), t1, face["landmarks"]))
    return values


def test_an_open_eyed_source_leaves_no_pale_arcs_over_squinting_lids(analyzer, t1, astronaut):
    """The astronaut (open eyes, lit lids) on t1's six faces, several of them squinting or laughing:
    the swap lightens the upper lids no more than the cheeks, within 6 (Lab lightness). Before the
    target kept its lids' shade (FINE_LIGHT_SCALE) the excess reached 38 on t1's third face from
    the left and 15 on the demo's laughing man; 4 at most after."""
    excess = [round(value, 1) for value in astronaut_on_t1s_faces(analyzer, t1, astronaut, lid_excess)]
    print("\nupper lids lightened beyond the cheeks (Lab L), t1's faces from the left:", excess)
    assert max(excess) <= 6.0, excess


def relief_ratio(result: np.ndarray, target: np.ndarray, pts: np.ndarray) -> float:
    """Streaks: the spread (10th to 90th percentile) of the result's lightness over its local mean
    (a Gaussian a twelfth of the face wide: folds, a cheek's shading) over the target's own, on the
    plain skin (the oval taken in by 0.08 of the face width, less the eyes, brows and lips grown by
    0.06). A source's smile folds at their own depth on a washed-out face read as brown streaks."""
    face_w = float(np.ptp(pts[:, 0]))

    def polygon(idx):
        mask = np.zeros(target.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(pts[idx]).astype(np.int32)], 1)
        return mask

    def disc(share):
        r = max(1, int(round(share * face_w)))
        return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2)

    features = (polygon(mesh_swap.EYE_IMAGE_LEFT) | polygon(mesh_swap.EYE_IMAGE_RIGHT) | polygon(mesh_swap.LIPS_OUTER)
                | polygon(mesh_swap.BROW_IMAGE_LEFT) | polygon(mesh_swap.BROW_IMAGE_RIGHT))
    plain = (cv2.erode(polygon(mesh_swap.FACE_OVAL), disc(0.08)) > 0) & (cv2.dilate(features, disc(0.06)) == 0)

    def spread(img):
        lightness = cv2.cvtColor(img, cv2.COLOR_BGR2LAB)[..., 0].astype(np.float32)
        relief = lightness - cv2.GaussianBlur(lightness, (0, 0), face_w / 12)
        low, high = np.percentile(relief[plain], [10, 90])
        return float(high - low)

    return spread(result) / spread(target)



def test_a_sources_fringe_leaves_no_smudge_on_the_forehead(analyzer, t1, astronaut):
    """The astronaut's fringe hangs over her forehead; its edge shades into her skin over a few
    pixels. On t1's faces (at twice their size), of the forehead (the oval above the brows' highest
    point) the swap darkens by 15 or more (Lab lightness) no pixel of the laughing man's (the fourth
    face), whose forehead got a brown arc above his brow from the fringe's edge (153 such pixels;
    286 over the six faces, now 133: the third face's are the source's brow, drawn a little above
    his own)."""
    big = cv2.resize(t1, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    src = largest(analyzer.analyze(astronaut, embed=False))
    swapper = MeshSwapper(*source_patch(astronaut, src["landmarks"]))

    def darkened(result, target, pts):
        # The oval above the brows' highest point.
        brow_y = pts[[mesh_swap.MID_BROW] + mesh_swap.BROW_IMAGE_LEFT + mesh_swap.BROW_IMAGE_RIGHT, 1].min()
        forehead = (swapper.masks(pts, target.shape[:2])[0] > 0) & (np.arange(target.shape[0])[:, None] < brow_y)
        lightness = [cv2.cvtColor(img, cv2.COLOR_BGR2LAB)[..., 0].astype(np.int16) for img in (result, target)]
        return int(((lightness[0] < lightness[1] - 15) & forehead).sum())

    values = astronaut_on_t1s_faces(analyzer, big, astronaut, darkened)
    print("\nforehead pixels the swap darkened by 15 or more, t1's faces from the left:", values)
    assert values[3] <= 20 and sum(values) <= 200, values

def test_a_sources_folds_come_over_at_the_targets_contrast(analyzer, t1, astronaut):
    """The astronaut (a smiling, contrasty face) on t1's six faces, two of them turned and washed out
    (pale skin lit flat): the plain skin's relief is at most 1.2 times the target's own (relief_ratio).
    Before relief_gain the astronaut's smile folds and cheek shading came over at their own depth,
    as brown streaks on a pale mask: 1.35, 1.68 and 1.54 times the target's on t1's second, fifth
    and sixth faces from the left; 1.05 at most after."""
    ratios = [round(value, 2) for value in astronaut_on_t1s_faces(analyzer, t1, astronaut, relief_ratio)]
    print("\nplain skin's relief over the target's, t1's faces from the left:", ratios)
    assert max(ratios) <= 1.2, ratios


def _lightness(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_BGR2LAB)[..., 0].astype(np.float32)


def test_a_crease_beside_the_mouth_is_not_kept_as_the_mouths_inside(analyzer, grace_hopper, astronaut):
    """Grace Hopper's mouth is closed, and a deep crease runs down from each corner. The swap keeps
    the target's own dark inside of the mouth (_mouth_cavity), looked for near the lips; it took a
    piece of her crease, apart from the opening, for it and kept it on the pasted cheek as a dark
    blot (56 pixels beside the mouth under 0.6 of the lightness there; 15 now, none of them that
    blot)."""
    src = largest(analyzer.analyze(astronaut, embed=False))
    swapper = MeshSwapper(*source_patch(astronaut, src["landmarks"]))
    face = largest(analyzer.analyze(grace_hopper, embed=False))
    pts = face["landmarks"]
    result = swap_frame(swapper, grace_hopper, [face])
    lips = mesh_swap._poly_mask(pts, mesh_swap.LIPS_OUTER, result.shape[:2])
    r = int(0.1 * np.ptp(pts[:, 0]))
    ring = ((cv2.dilate(lips, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2)) > 0)
            & (cv2.dilate(lips, np.ones((5, 5), np.uint8)) == 0))
    lightness = _lightness(result)
    dark = int((ring & (lightness < 0.6 * np.median(lightness[ring]))).sum())
    print("\ndark pixels beside the mouth:", dark)
    assert dark <= 30, dark


def test_a_shade_inside_the_face_is_pasted_over_not_left_as_a_hole(analyzer, t1, astronaut):
    """Near the oval the paste leaves out what is not skin (hair, background), which comes in from
    the oval's edge; a shade apart from it (t1's laughing man in grey, the shadow under his lower lip
    at twice his size) was left out too, and showed as a dark mark on the pasted chin: 146 pixels of
    the lower face 35 or more under its median lightness (Lab), 10 now."""
    big = cv2.resize(t1, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)

    def dark_below_the_mouth(result, target, pts):
        shape = result.shape[:2]
        r = int(0.03 * np.ptp(pts[:, 0]))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2)
        region = cv2.erode(mesh_swap._poly_mask(pts, mesh_swap.FACE_OVAL, shape), kernel) > 0
        region &= cv2.dilate(mesh_swap._poly_mask(pts, mesh_swap.LIPS_OUTER, shape), kernel) == 0
        region &= np.arange(shape[0])[:, None] > pts[mesh_swap.LIPS_OUTER, 1].max()
        lightness = _lightness(result)
        return int((region & (lightness < np.median(lightness[region]) - 35)).sum())

    values = astronaut_on_t1s_faces(analyzer, big, astronaut, dark_below_the_mouth)
    print("\ndark pixels below the mouth, t1's faces from the left:", values)
    assert values[2] <= 40, values


def test_an_overexposed_faces_swapped_skin_keeps_its_hue(analyzer, t1, astronaut):
    """t1.jpg brightened 1.35 times (its faces' highlights clipped), the astronaut swapped onto each
    face: the pixels whose hue the swap turned green or blue (Lab a* or b* under neutral where the
    target's was not) number 1054 (3212 before: a clipped pixel, red and green both at 255, reads
    as a greenish yellow, and the target's colour means and shade slope took that for its skin's:
    a green brow, cyan patches on a cheek)."""
    bright = np.clip(t1.astype(np.float32) * 1.35, 0, 255).astype(np.uint8)

    def turned(result, target, pts):
        lab, own = (cv2.cvtColor(img, cv2.COLOR_BGR2LAB).astype(np.int16) for img in (result, target))
        changed = np.abs(result.astype(np.int16) - target).max(axis=2) > 3
        return int((changed & (((lab[..., 1] < 126) & (own[..., 1] >= 126))
                               | ((lab[..., 2] < 126) & (own[..., 2] >= 126)))).sum())

    values = astronaut_on_t1s_faces(analyzer, bright, astronaut, turned)
    print("\npixels turned green or blue, t1's faces from the left:", values)
    assert sum(values) <= 1600, values


def test_a_masked_mean_far_from_its_mask_is_the_whole_masks_mean():
    """Beyond the Gaussian's reach of every pixel of the mask, the mean is the mask's own mean: it
    was zero, which in Lab is black with a strong blue-green cast, and it showed as blue blobs
    where the paste reached past the skin (the zone around a brow next to a fringe)."""
    img = np.zeros((120, 160, 3), np.float32)
    img[:10, :10] = (150.0, 140.0, 150.0)
    mask = np.zeros((120, 160), bool)
    mask[:10, :10] = True
    mean = mesh_swap._masked_mean(img, mask, 4.0)
    assert np.allclose(mean[:5, :5], (150.0, 140.0, 150.0), atol=1.0)
    assert np.allclose(mean[-5:, -5:], (150.0, 140.0, 150.0), atol=1.0)


def test_brows_take_the_target_skins_hue_with_their_own_darkness_and_saturation():
    """An ash-brown brow on a pink source, pasted on an orange-lit target: the brow's colour has the
    target skin's hue (not the source's hue offset, which on orange skin reads olive), is less
    saturated than that skin as it was than the source's, and keeps its darkness."""
    h, w = 40, 40
    source = np.zeros((h, w, 3), np.float32)
    source[:] = (170.0, 145.0, 140.0)  # pink skin (Lab, OpenCV's 8-bit scale)
    source[18:22] = (90.0, 132.0, 136.0)  # an ash-brown brow
    target = np.zeros((h, w, 3), np.float32)
    target[:] = (160.0, 150.0, 165.0)  # orange-lit skin
    brow = np.zeros((h, w), bool)
    brow[18:22] = True
    skin = ~brow
    out = mesh_swap.relight(source, target, skin, np.ones((h, w), bool), 6.0, brows=brow)
    a, b = out[20, 20, 1] - 128.0, out[20, 20, 2] - 128.0
    hue_target = np.degrees(np.arctan2(165.0 - 128.0, 150.0 - 128.0))
    assert abs(np.degrees(np.arctan2(b, a)) - hue_target) < 3.0
    assert np.hypot(a, b) < np.hypot(150.0 - 128.0, 165.0 - 128.0) * 0.6
    assert out[20, 20, 0] < 160.0 - 60.0


def test_a_dim_face_gets_no_white_blotches_and_no_streaks_of_colour(analyzer, t1, astronaut):
    """t1 at a twentieth of its light (a night scene, a dim room): the source's highlights, brows and
    folds come over at the target's light (relight's ratio of L* + 16), not at the astronaut's full
    depth, which made white blotches (highlights over a dark face) and red streaks (brows and folds
    taken to black with their colour left on). Measured over what each swap changed: the most
    coloured 0.5% of the result's pixels for their lightness (chroma over L* + 16) against the
    target's own (0.85-0.95 here; 1.12-1.29 before), and how far the result's lightest pixel lies
    above the target's 99th percentile (-2 to +3 levels; +4 to +19 before)."""
    dim = np.clip(255 * ((t1 / 255.0) ** 2.2 * 0.05) ** (1 / 2.2), 0, 255).astype(np.uint8)
    swapper = MeshSwapper(*source_patch(astronaut, analyzer.analyze(astronaut, embed=False)[0]["landmarks"]))
    faces = analyzer.analyze(t1, embed=False)
    assert len(faces) == 6
    for face in faces:
        patch = swapper.swap_one(dim, face["landmarks"])
        h, w = patch.image.shape[:2]
        target = cv2.cvtColor(dim[patch.y:patch.y + h, patch.x:patch.x + w], cv2.COLOR_BGR2LAB).astype(float)
        out = cv2.cvtColor(patch.image, cv2.COLOR_BGR2LAB).astype(float)
        changed = np.abs(out - target).max(axis=2) > 2
        assert changed.sum() > 0.1 * changed.size  # swapped

        def coloured(lab):
            return np.percentile((np.hypot(lab[..., 1] - 128, lab[..., 2] - 128) / (lab[..., 0] + 40.8))[changed], 99.5)

        print(f"face at x={face['box'][0]:.0f}: colour for lightness {coloured(out) / coloured(target):.2f} of the "
              f"target's, lightest {out[..., 0][changed].max() - np.percentile(target[..., 0][changed], 99):+.0f}")
        assert coloured(out) <= 1.02 * coloured(target)
        assert out[..., 0][changed].max() <= np.percentile(target[..., 0][changed], 99) + 8


# -- the source's face shape ----------------------------------------------------------------------


def test_shape_transfer_brings_the_sources_proportions_and_identity(analyzer, t1, astronaut):
    """The astronaut as the source on t1's six faces, shape_transfer 0 and the default: the result's
    own mesh (read again by the analyzer) lies nearer the source's proportions (shape_offsets: the
    pose-normalised move still to go, over the face's width, inner points), and dlib's distance to
    the source is lower (median over the faces). The move is small on these faces: most of them are
    turned (the transfer fades out as a face turns, where the 2-D difference is mostly pose) and it
    fades in from the oval. The shape is compared by its mean over the faces: on the turned ones it
    barely moves, and its re-read mesh moves by a few thousandths of the face width with any change
    of the pasted texture, so the median (the turned faces' middle) measured that noise."""
    src = largest(analyzer.analyze(astronaut))
    crop, crop_pts = source_patch(astronaut, src["landmarks"])
    oval = np.zeros(mesh_swap.NUM_POINTS, bool)
    oval[mesh_swap.FACE_OVAL] = True
    figures = {}
    for strength in (0, mesh_swap.SHAPE_TRANSFER):
        swapper = MeshSwapper(crop, crop_pts, shape_transfer=strength)
        shape, identity = [], []
        for face in analyzer.analyze(t1, embed=False):
            out = swap_frame(swapper, t1, [face])
            # Read again on the face's own neighbourhood (the whole group photo takes longer).
            x0, y0 = np.maximum(face["landmarks"].min(axis=0) - 60, 0).astype(int)
            x1, y1 = (face["landmarks"].max(axis=0) + 60).astype(int)
            found = analyzer.analyze(np.ascontiguousarray(out[y0:y1, x0:x1]))
            centre = face["landmarks"].mean(0) - (x0, y0)
            got = min(found, key=lambda f: np.linalg.norm(f["landmarks"].mean(0) - centre))
            left = mesh_swap.shape_offsets(crop_pts, got["landmarks"])
            shape.append(float(np.linalg.norm(left[~oval], axis=1).mean() / np.ptp(got["landmarks"][:, 0])))
            identity.append(float(np.linalg.norm(got["embedding"] - src["embedding"])))
        figures[strength] = (round(float(np.mean(shape)), 4), round(float(np.median(identity)), 3))
    print("\nshape_transfer: (mean shape difference to the source / face width, median dlib distance)", figures)
    (shape_0, id_0), (shape_d, id_d) = figures[0], figures[mesh_swap.SHAPE_TRANSFER]
    assert shape_d < shape_0
    assert id_d < id_0


def test_shape_transfer_is_a_job_option_the_mesh_swap_takes_and_the_others_accept(astronaut):
    import inspect

    from facepipe.models.swapper import AlignedSwapper
    from facepipe.models.zoo import load

    pts = np.zeros((mesh_swap.NUM_POINTS, 2), np.float32)
    pts[:, 0], pts[:, 1] = np.linspace(10, 100, mesh_swap.NUM_POINTS), np.linspace(20, 90, mesh_swap.NUM_POINTS) ** 1.1
    record = {"source_crop": astronaut[:128, :128].copy(), "source_landmarks": pts}
    assert load("mesh_warp", None, [], shape_transfer=0).prepare_source(record).shape_transfer == 0
    assert load("mesh_warp", None, [], shape_transfer=100).prepare_source(record).shape_transfer == 1.0
    default = load("mesh_warp", None, []).prepare_source(record).shape_transfer
    assert default == mesh_swap.SHAPE_TRANSFER / 100
    assert "shape_transfer" in inspect.signature(AlignedSwapper.__init__).parameters  # learned swappers take it, unused
    with pytest.raises(mesh_swap.SwapError):
        MeshSwapper(record["source_crop"], pts, shape_transfer=101)


# -- identity -------------------------------------------------------------------------------------


def test_identity_on_package_photos_holds_at_the_previous_swaps_level(analyzer):
    """tools/identity_benchmark.py's twelve pairs (the astronaut onto each of t1's six faces and each
    of them onto the astronaut), swapped as the workflow swaps them, at the default shape_transfer:
    the median dlib distance to the source stays at the previous swaps' level (0.648 for the swap of
    1da6d4d, 0.653 before the source's brows, lids and lips came over), not above 0.655, and well
    below no swap. Measured 0.650 (0.652 before the detector's whole-frame passes shared squares:
    a pixel's shift of the photos moves it by up to 0.01, tools/identity_benchmark.py --shifts, so
    this bound is near the figure's own noise); it was 0.630 before the target kept its lids' shade (an open-eyed
    source's lit lids had covered it: a part of the source's look dlib reads, and of the target's
    expression) and 0.644 before the source's relief followed the target's contrast (relief_gain:
    its smile folds at their own depth were brown streaks on washed-out faces), so it is no longer
    clearly below them: issue 21 stays open on this."""
    from tools import identity_benchmark

    figures = identity_benchmark.identity(analyzer, None, [identity_benchmark.DEFAULT], None)
    distance = figures[f"shape_transfer {identity_benchmark.DEFAULT}"]["distance"]
    print(f"\ndlib distance to the source per pair: {np.round(distance, 3).tolist()}, median "
          f"{np.median(distance):.3f} (no swap: {np.median(figures['no swap']):.3f})")
    assert np.median(distance) < 0.655
    assert np.median(distance) < np.median(figures["no swap"]) - 0.12


# -- large faces ------------------------------------------------------------------------------------


def test_a_large_face_is_swapped_at_swap_width_and_looks_as_swapped_at_full_size(analyzer, t1, astronaut, monkeypatch):
    """A face over SWAP_WIDTH (the astronaut enlarged 4x: about 380 px wide) is swapped at that width
    and brought back to full size with the source's finer detail and the target's own eyes and mouth:
    against the same swap done at full size, the face differs little (mean and 99th percentile of the
    absolute difference, 0-255), and the swap itself ran on the shrunk crop."""
    big = cv2.resize(astronaut, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    target = largest(analyzer.analyze(big, embed=False))
    assert np.ptp(target["landmarks"][:, 0]) > 1.3 * mesh_swap.SWAP_WIDTH
    src = largest(analyzer.analyze(t1, embed=False))
    swapper = MeshSwapper(*source_patch(t1, src["landmarks"]))
    widths = []
    layers = swapper._layers
    monkeypatch.setattr(swapper, "_layers", lambda roi, pts: widths.append(np.ptp(pts[:, 0])) or layers(roi, pts))
    shrunk = swap_frame(swapper, big, [target])
    assert widths and max(widths) <= mesh_swap.SWAP_WIDTH + 1, widths
    monkeypatch.setattr(mesh_swap, "SWAP_WIDTH", 10_000)
    full = swap_frame(swapper, big, [target])
    face = mesh_swap._poly_mask(target["landmarks"], mesh_swap.FACE_OVAL, big.shape[:2]) > 0
    diff = np.abs(shrunk.astype(np.float32) - full.astype(np.float32)).max(axis=2)[face]
    changed = np.abs(full.astype(np.float32) - big.astype(np.float32)).max(axis=2)[face]
    print("\nlarge face at SWAP_WIDTH against full size: mean |d|", round(float(diff.mean()), 2), "99th",
          float(np.percentile(diff, 99)), "; the swap's own change, mean", round(float(changed.mean()), 1))
    assert changed.mean() > 5 * diff.mean()  # the swap did change the face
    assert diff.mean() < 1.5 and np.percentile(diff, 99) < 12


def test_triangle_affines_are_the_solvers_maps_and_a_degenerate_triangle_maps_to_zero():
    """The piecewise-affine maps (closed form) give the float32 values NumPy's solver gives; a
    triangle whose corners lie on one line (mesh points clipped onto the frame's edge) gets an
    all-zero map instead of stopping the swap with a singular matrix."""
    rng = np.random.default_rng(7)
    src = rng.uniform(0, 400, (900, 3, 2)).astype(np.float32)
    dst = rng.uniform(0, 400, (900, 3, 2)).astype(np.float32)
    square = np.concatenate([src, np.ones((900, 3, 1), np.float32)], 2).astype(np.float64)
    solved = np.linalg.solve(square, dst.astype(np.float64)).transpose(0, 2, 1).astype(np.float32)
    maps = piecewise.triangle_affines(src, dst)
    assert maps.dtype == np.float32 and maps.shape == (900, 2, 3)
    np.testing.assert_allclose(maps, solved, rtol=1e-6, atol=1e-4)
    # Each map takes its triangle's corners onto the other's (triangles of a usable size: a sliver's
    # float32 map is as ill-conditioned as the solver's).
    corners = np.concatenate([src, np.ones((900, 3, 1), np.float32)], 2)
    usable = np.abs(piecewise.signed_areas(src)) > 2000
    np.testing.assert_allclose(np.einsum("nij,nkj->nki", maps.astype(np.float64), corners)[usable], dst[usable],
                               atol=1e-2)
    src[0, :, 0] = 0.0  # three corners on the line x = 0
    maps = piecewise.triangle_affines(src, dst)
    assert not maps[0].any() and np.isfinite(maps).all()
