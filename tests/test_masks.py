"""The learned mask models (occluder, face parser) on their stand-ins: a float32 mask of each
crop's shape in [0, 1], the same batched as one by one, and the parser's regions as asked."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facepipe.models.alignment import template_points
from facepipe.media.demo import insightface_image
from facepipe.models import MODELS, offered
from facepipe.models.face_parser import REGIONS
from facepipe.models.zoo import load
from facepipe.models.occluder import OCCLUDER_ELLIPSE
from facepipe.models.standin import build_standin

MASK_MODELS = sorted(k for k, s in MODELS.items() if s.role in ("occluder", "parser"))


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "standin"
    return {key: build_standin(key, folder / MODELS[key].filename) for key in MASK_MODELS}


def _model(standins, key, **kwargs):
    return load(key, standins[key], ["cpu"], **kwargs)


@pytest.fixture(scope="module")
def photo_crops():
    """Three different crops of a real photo (sizes the swap uses: 128, 256 and a boosted 512)."""
    img = cv2.imread(str(insightface_image("t1.jpg")))
    return [cv2.resize(img[y:y + 200, x:x + 200], (side, side)) for (x, y), side in
            (((0, 0), 256), ((300, 100), 256), ((500, 150), 256), ((100, 50), 128), ((600, 50), 512))]


def _at(side, fx, fy):
    """The pixel (row, column) at fractions (x, y) of a side-px crop."""
    return int(fy * side), int(fx * side)


def test_the_issue_asks_for_an_occluder_and_a_face_parser_and_both_are_offered():
    assert {"xseg_1", "xseg_2", "xseg_3"} <= set(offered("occluder"))
    assert "bisenet_resnet_34" in offered("parser")
    assert "GPL-3.0" in MODELS["xseg_1"].licence and "non-commercial" in MODELS["bisenet_resnet_34"].licence


@pytest.mark.parametrize("key", MASK_MODELS)
def test_a_mask_per_crop_of_its_shape_in_unit_range(standins, photo_crops, key):
    masks = _model(standins, key).masks(photo_crops)
    assert len(masks) == len(photo_crops)
    for mask, crop in zip(masks, photo_crops):
        assert mask.shape == crop.shape[:2] and mask.dtype == np.float32
        assert 0.0 <= mask.min() and mask.max() <= 1.0
        assert mask.max() == 1.0 and mask.min() == 0.0  # both a face to swap and pixels to keep


@pytest.mark.parametrize("key", MASK_MODELS)
def test_batched_equals_one_by_one(standins, photo_crops, key):
    batched = _model(standins, key, batch_size=4)
    assert batched.batch_size == 4  # the published files have a free batch, like the stand-ins
    single = _model(standins, key, batch_size=1)
    # IO binding (the GPU path; on a CPU session the same results) with a last, smaller batch.
    bound = _model(standins, key, batch_size=4, io_binding=True)
    one_by_one = [single.masks([c])[0] for c in photo_crops]
    for masks in (batched.masks(photo_crops), bound.masks(photo_crops)):
        for a, b in zip(masks, one_by_one, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("key", MASK_MODELS)
def test_frame_and_keypoints_give_the_mask_on_the_models_own_crop(standins, photo_crops, key):
    model = _model(standins, key)
    size, template = MODELS[key].size, MODELS[key].template
    frame = cv2.resize(photo_crops[0], (640, 480))
    # A face whose keypoints are the template's, shifted and scaled into the frame.
    kps = template_points(template, 200) + (150.0, 100.0)
    (mask, matrix), = model.masks_for_faces(frame, [kps])
    assert mask.shape == (size, size)
    placed = np.hstack([kps, np.ones((5, 1))]) @ matrix.T
    np.testing.assert_allclose(placed, template_points(template, size), atol=1e-6)
    crop, _ = model.crop(frame, kps)
    np.testing.assert_array_equal(mask, model.masks([crop])[0])


@pytest.mark.parametrize("key", [k for k in MASK_MODELS if MODELS[k].role == "occluder"])
def test_the_occluder_keeps_what_covers_the_face(standins, key):
    side = 256
    face = np.full((side, side, 3), 170, np.uint8)
    covered = face.copy()
    covered[150:220, 60:120] = 10  # a dark object on the cheek and mouth
    clear, blocked = _model(standins, key).masks([face, covered])
    cx, cy = OCCLUDER_ELLIPSE[:2]
    assert clear[_at(side, cx, cy)] == 1.0 and clear[_at(side, 0.03, 0.03)] == 0.0
    assert blocked[185, 90] == 0.0  # the object stays the target's
    assert blocked[_at(side, 0.65, 0.45)] == 1.0  # the face beside it is still swapped
    assert blocked.sum() < clear.sum()


@pytest.mark.parametrize("key", [k for k in MASK_MODELS if MODELS[k].role == "parser"])
def test_the_parser_keeps_the_regions_asked_for(standins, key):
    side = 256
    crop = np.full((side, side, 3), 160, np.uint8)
    parser = _model(standins, key)
    eye_l, eye_r, nose, mouth_l, mouth_r = template_points(MODELS[key].template, 1.0)
    mouth = (mouth_l + mouth_r) / 2
    cheek, hair, corner = (0.30, 0.60), (0.5, 0.05), (0.02, 0.98)
    labels = parser.labels([crop])[0]
    assert labels.shape == (side, side) and labels.dtype == np.uint8
    assert labels[_at(side, *nose)] == REGIONS["nose"] and labels[_at(side, *eye_l)] == REGIONS["left-eye"]

    whole, nose_only, eyes, no_mouth = (
        parser.masks([crop], regions)[0] for regions in
        (list(REGIONS), ["nose"], ["left-eye", "right-eye"], [r for r in REGIONS if r not in ("mouth", "upper-lip",
                                                                                              "lower-lip")]))
    np.testing.assert_array_equal(whole, parser.masks([crop])[0])  # every region is the default
    # Over 0.5: swapped (mostly); 0: the target's own pixels. Small regions have soft edges.
    def kept(mask, point):
        return mask[_at(side, *point)] > 0.5

    def left(mask, point):
        return mask[_at(side, *point)] == 0.0

    assert all(kept(whole, p) for p in (cheek, nose, mouth, eye_l)) and left(whole, hair) and left(whole, corner)
    assert kept(nose_only, nose) and left(nose_only, cheek) and left(nose_only, eye_l)
    assert kept(eyes, eye_l) and kept(eyes, eye_r) and left(eyes, nose)
    assert left(no_mouth, mouth) and kept(no_mouth, cheek) and kept(no_mouth, nose)  # the target keeps its mouth
    assert max(nose_only.sum(), eyes.sum()) < no_mouth.sum() < whole.sum()
    with pytest.raises(ValueError, match="unknown face region"):
        parser.masks([crop], ["beard"])


@pytest.mark.parametrize("key", MASK_MODELS)
def test_a_stand_in_says_so_when_it_is_loaded(standins, caplog, key):
    with caplog.at_level("WARNING"):
        _model(standins, key)
    assert f"STAND-IN model {standins[key]}" in caplog.text and f"stands in for {key}" in caplog.text
