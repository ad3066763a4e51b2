"""A black-and-white or toned target stays monochrome through the swap and the enhancer
(facepipe.media.tone), and a colour target's patches are not touched."""

import cv2
import numpy as np
import pytest

from facepipe.media.patches import Patch
from facepipe.media.tone import MONOCHROME_SPREAD, keep_monochrome, patch_in_target_tone, tone_of


def grey(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


def sepia(bgr: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255
    return np.clip(np.dstack([g * 0.75, g * 0.95, g * 1.1]) * 255, 0, 255).astype(np.uint8)


def lab(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB).astype(np.float32)


def colour(bgr: np.ndarray) -> int:
    """The most a pixel's channels differ: 0 or 1 (rounding) for grey."""
    return int((bgr.max(axis=2).astype(int) - bgr.min(axis=2)).max())


@pytest.fixture(scope="module")
def face(t1):
    """A face of insightface's group photo with the skin around it (the woman on the left)."""
    return np.ascontiguousarray(t1[282:390, 58:161])


@pytest.fixture(scope="module")
def coloured_patch(astronaut):
    """A colour face the size of ``face``: the astronaut's, with her red lips and warm skin."""
    return cv2.resize(astronaut[40:230, 150:330], (103, 108), interpolation=cv2.INTER_AREA)


def test_the_spread_tells_colour_from_grey_and_toned_pictures(face):
    low, high = MONOCHROME_SPREAD
    assert tone_of(face)[0] > 2 * high
    assert tone_of(grey(face))[0] < 0.5 * low
    assert tone_of(sepia(face))[0] < low


def test_a_colour_targets_patch_is_left_as_it_was_made(face, coloured_patch):
    assert keep_monochrome(coloured_patch, face) is coloured_patch


def test_on_a_grey_target_the_patch_is_grey_at_its_own_lightness(face, coloured_patch):
    out = keep_monochrome(coloured_patch, grey(face))
    assert colour(out) <= 1  # no colour left
    assert colour(coloured_patch) > 60  # the lips were red
    assert np.abs(lab(out)[..., 0] - lab(coloured_patch)[..., 0]).max() <= 2.0


def test_on_a_toned_target_the_patch_takes_the_tone_at_each_lightness(face, coloured_patch):
    target = sepia(face)
    out = lab(keep_monochrome(coloured_patch, target))
    # What the sepia picture's own pixels have at each lightness (a least-squares line), the patch has.
    t = lab(target).reshape(-1, 3)
    fit = [np.polyfit(t[:, 0], t[:, channel], 1) for channel in (1, 2)]
    inside = (out[..., 0] > t[:, 0].min()) & (out[..., 0] < t[:, 0].max())
    for channel, (slope, offset) in zip((1, 2), fit):
        off = out[..., channel][inside] - (slope * out[..., 0][inside] + offset)
        assert np.percentile(np.abs(off), 95) < 2.0


def test_a_pixels_patch_keeps_the_targets_own_pixels_bit_for_bit(face, coloured_patch):
    target = grey(face)
    image = target.copy()
    image[30:80, 20:80] = coloured_patch[30:80, 20:80]  # the swapped part; the rest is the target's
    crop = cv2.copyMakeBorder(target, 10, 10, 10, 10, cv2.BORDER_REFLECT)  # the crop around it, at (90, 190)
    patch = Patch(kind="pixels", image=image, x=100, y=200)
    patch_in_target_tone(patch, crop, 90, 190)
    assert np.array_equal(patch.image[:30], target[:30]) and np.array_equal(patch.image[80:], target[80:])
    assert colour(patch.image[30:80, 20:80]) <= 1


def test_the_offline_swap_of_a_black_and_white_photo_adds_no_colour(mesh_analyzer, t1, astronaut, tmp_path):
    """Through the swap stage (facepipe.swap.segment): the mesh swap brings the source's lips and
    colour detail, which on a black-and-white photo read as hand tinting."""
    from facepipe.faces.detection import detect_frames
    from facepipe.media.patches import read_patches
    from facepipe.media.video import WorkFrame
    from facepipe.models.classic_swap import source_patch
    from facepipe.models.zoo import load
    from facepipe.swap.segment import swap_segment
    from tests.workflow_helpers import track_still

    photo = grey(t1)
    table = detect_frames(mesh_analyzer, [WorkFrame(1, bgr=photo)], crop="landmark_box")
    tracks, _ = track_still(table, tmp_path / "seg_0000.parquet", "euclidean")
    source = mesh_analyzer.analyze(astronaut)[0]
    adapter = load("mesh_warp", None, [])
    prepared = adapter.prepare_source(dict(zip(("source_crop", "source_landmarks"),
                                               source_patch(astronaut, source["landmarks"]))))
    out = tmp_path / "patches.parquet"
    assert swap_segment(tmp_path / "seg_0000.parquet", tracks.assign(source="source"),
                        {"source": (adapter, prepared)}, out, crop_kind="landmark_box") >= 5
    for patch in read_patches(out)[1]:
        y, x = patch.y, patch.x
        h, w = patch.image.shape[:2]
        assert not np.array_equal(patch.image, photo[y:y + h, x:x + w])  # swapped
        assert colour(patch.image) <= 1


def test_a_black_and_white_source_gives_brows_and_lips_the_targets_colour(mesh_analyzer, t1, astronaut):
    """A black-and-white source photo (an old portrait) has no colour of its own: on a colour target
    its brows take the target skin's colour (a neutral grey there reads as blue beside a warm
    skin) and its lips the target's own lips' colour."""
    from facepipe.models import mesh_swap as ms
    from facepipe.models.classic_swap import source_patch

    swappers = {}
    for name, photo in (("colour", astronaut), ("grey", grey(astronaut))):
        source = mesh_analyzer.analyze(photo, embed=False)[0]
        swappers[name] = ms.MeshSwapper(*source_patch(photo, source["landmarks"]))
    faces = mesh_analyzer.analyze(t1, embed=False)
    assert len(faces) == 6
    for face in faces:
        brows, lips = {}, {}
        for name, swapper in swappers.items():
            patch = swapper.swap_one(t1, face["landmarks"])
            pts = face["landmarks"] - (patch.x, patch.y)
            shape = patch.image.shape[:2]
            out = lab(patch.image)
            h, w = shape
            target = lab(t1[patch.y:patch.y + h, patch.x:patch.x + w])
            brow = (ms._poly_mask(pts, ms.BROW_IMAGE_LEFT, shape) | ms._poly_mask(pts, ms.BROW_IMAGE_RIGHT, shape)) > 0
            hairs = out[brow][out[brow][:, 0] <= np.percentile(out[brow][:, 0], 30)]  # the darkest: the hairs
            brows[name] = float(np.hypot(*(np.median(hairs[:, 1:], axis=0) - 128)))
            mouth = ms._poly_mask(pts, ms.LIPS_OUTER, shape) > 0
            lips[name] = (float(np.median(out[mouth][:, 1])), float(np.median(target[mouth][:, 1])))
        assert brows["grey"] >= 0.7 * brows["colour"], brows
        swapped, own = lips["grey"]
        assert abs(swapped - own) <= 4, lips


def test_a_learned_swap_of_a_black_and_white_frame_adds_no_colour(tmp_path):
    """The learned path (aligned crops, the stand-in INSwapper, which shifts the colours of what it
    is given) through the swap stage: grey on a grey frame, its own colours on a colour one."""
    import pandas as pd

    from facepipe.faces.detection import detect_frames, write_faces
    from facepipe.media.demo import insightface_image
    from facepipe.media.patches import read_patches
    from facepipe.media.video import WorkFrame
    from facepipe.models.face_analyzer import FaceAnalyzer
    from facepipe.models.standin import build_standin
    from facepipe.swap.segment import swap_segment
    from tests.model_helpers import INSWAPPER_CROP, inswapper

    d = tmp_path / "standin"
    d.mkdir()
    det, rec, model = (build_standin(key, d / f"{key}.onnx") for key in ("det_10g", "w600k_r50", "inswapper_128"))
    photo = cv2.resize(cv2.imread(str(insightface_image("t1.jpg"))), (640, 360))
    colours = {}
    for name, frame in (("grey", grey(photo)), ("colour", photo)):
        table = detect_frames(FaceAnalyzer(det, rec, ["cpu"]), [WorkFrame(1, bgr=frame)], crop=INSWAPPER_CROP)
        write_faces(table, tmp_path / f"{name}.parquet")
        tracked = pd.DataFrame(table).assign(seg_frame=table["frame"], filled=False, person=1, track=0,
                                             source="source")
        swapper = inswapper(model)
        source = swapper.prepare_source({"embedding": np.random.default_rng(2).standard_normal(512).astype(np.float32)})
        out = tmp_path / f"{name}_patches.parquet"
        assert swap_segment(tmp_path / f"{name}.parquet", tracked, {"source": (swapper, source)}, out,
                            crop_kind=INSWAPPER_CROP) == 1
        (patch,) = read_patches(out)[1]
        assert patch.kind == "eroded_crop"
        colours[name] = colour(patch.image)
    assert colours["grey"] <= 1 < 20 < colours["colour"]


def test_the_enhancers_faces_on_a_black_and_white_frame_stay_grey(tmp_path):
    """Whatever colour a restorer paints a face (here a warm tint), a grey frame's face stays grey;
    a colour frame's keeps it."""
    from facepipe.media.patches import read_patches, write_patches
    from facepipe.media.video import WorkFrame
    from facepipe.swap.enhance import enhance_segment
    from facepipe.media.demo import insightface_image

    class WarmRestorer:
        batch_size = 1

        def crop(self, img, kps):
            return np.ascontiguousarray(img[100:228, 100:228]), np.array([[1, 0, -100], [0, 1, -100]], np.float32)

        def enhance(self, crops):
            return [np.clip(c.astype(int) + (-20, 0, 30), 0, 255).astype(np.uint8) for c in crops]

    photo = cv2.resize(cv2.imread(str(insightface_image("t1.jpg"))), (640, 360))
    kps = np.array([[150, 150], [180, 150], [165, 170], [152, 190], [178, 190]], np.float32)
    for name, frame in (("grey", grey(photo)), ("colour", photo)):
        # The swap's patch there: the frame's own pixels (what the swap made is beside the point).
        swapped = Patch("pixels", frame[150:170, 150:170].copy(), x=150, y=150, frame=1, face=0, kps=kps)
        write_patches([[swapped]], tmp_path / f"{name}_swapped.parquet")
        out = tmp_path / f"{name}.parquet"
        assert enhance_segment([WorkFrame(1, bgr=frame)], tmp_path / f"{name}_swapped.parquet", WarmRestorer(),
                               out) == 1
        (enhanced,) = [p for p in read_patches(out)[1] if p.kind == "feathered_crop"]
        assert (colour(enhanced.image) <= 1) == (name == "grey")
