"""The job's face masks on the learned path (facepipe.swap.masks), on synthetic faces and the mask
models' stand-ins: each mask type keeps exactly what it should, and they combine by product."""

from __future__ import annotations

import numpy as np
import pytest

from facepipe.models.alignment import TEMPLATES
from facepipe.swap.masks import AlignedCropMasks, as_patch_mask, box_mask, mouth_keep_mask
from facepipe.models import MODELS, BACKENDS, models_for
from facepipe.models.face_parser import REGIONS
from facepipe.models.zoo import load
from facepipe.models.face_parser import parser_label_map
from facepipe.models.standin import build_standin

SIDE = 256


@pytest.fixture(scope="module")
def mask_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "standin"  # a stand-in is only ever loaded from there
    b = BACKENDS["standin"]
    return {role: load(key, build_standin(key, folder / MODELS[key].filename), ["cpu"])
            for role, key in (("occluder", b.occluder), ("parser", b.parser))}


def synthetic_face(side=SIDE):
    """A flat skin-toned crop (the stand-ins' masks do not depend on the face, but the occluder
    keeps dark pixels as covering: a crop without them)."""
    return np.full((side, side, 3), (120, 150, 200), np.uint8)


def test_box_mask_keeps_the_padded_border_and_swaps_inside():
    mask = box_mask(SIDE, 0.0, (10, 20, 30, 40))
    assert mask[:int(0.10 * SIDE)].max() == 0 and mask[SIDE - int(0.30 * SIDE):].max() == 0
    assert mask[:, :int(0.40 * SIDE)].max() == 0 and mask[:, SIDE - int(0.20 * SIDE):].max() == 0
    assert mask[int(0.10 * SIDE):SIDE - int(0.30 * SIDE), int(0.40 * SIDE):SIDE - int(0.20 * SIDE)].min() == 1
    soft = box_mask(SIDE, 0.3, (0, 0, 0, 0))
    assert soft[SIDE // 2, SIDE // 2] > 0.99 and soft[0, 0] < 0.01 and 0.05 < soft[SIDE // 2, 12] < 0.95


def test_mouth_mask_covers_the_templates_mouth_and_nothing_of_the_eyes():
    keep = mouth_keep_mask(SIDE)
    points = TEMPLATES["arcface_128"] * SIDE
    mouth = points[3:5].mean(0).round().astype(int)
    assert keep[mouth[1], mouth[0]] > 0.99
    for eye in points[:2].round().astype(int):
        assert keep[eye[1], eye[0]] == 0.0
    nose = points[2].round().astype(int)
    assert keep[nose[1], nose[0]] < 0.05


@pytest.mark.parametrize("regions", [["skin"], ["skin", "nose", "mouth", "upper-lip", "lower-lip"]])
def test_region_mask_swaps_exactly_the_chosen_regions(mask_models, regions):
    from scipy.ndimage import binary_erosion

    masks = AlignedCropMasks(["region"], blur=0.0, padding=(0, 0, 0, 0), regions=regions,
                             parser=mask_models["parser"])
    mask = masks.masks([synthetic_face()])[0]
    # The stand-in draws its layout at an eighth of its 512 px input (facepipe.models.standin).
    layout = np.kron(parser_label_map(MODELS[BACKENDS["standin"].parser].size // 8), np.ones((4, 4), np.uint8))
    chosen = np.isin(layout, [REGIONS[r] for r in regions])
    # Away from the regions' edges (the finishing blur softens them, as FaceFusion's does):
    # swapped inside the chosen regions, the target's own everywhere else (eyes, brows, hair...).
    assert mask[binary_erosion(chosen, iterations=16)].min() > 0.98
    assert mask[binary_erosion(~chosen, iterations=16)].max() < 0.02


def test_masks_multiply_and_mouth_keeps_the_targets_mouth(mask_models):
    both = AlignedCropMasks(["box", "mouth", "occlusion"], blur=0.3, padding=(0, 0, 0, 0), regions=[],
                            occluder=mask_models["occluder"]).masks([synthetic_face()])[0]
    box = box_mask(SIDE, 0.3, (0, 0, 0, 0))
    mouth = mouth_keep_mask(SIDE)
    occlusion = mask_models["occluder"].masks([synthetic_face()])[0]
    np.testing.assert_allclose(both, box * (1 - mouth) * occlusion, atol=1e-6)
    points = TEMPLATES["arcface_128"] * SIDE
    mx, my = points[3:5].mean(0).round().astype(int)
    assert both[my, mx] < 0.01  # the mouth stays the target's


def test_occluder_keeps_a_dark_object_as_the_targets(mask_models):
    face = synthetic_face()
    face[150:220, 60:140] = 5  # a dark object over the lower left of the face
    mask = AlignedCropMasks(["occlusion"], blur=0.0, padding=(0, 0, 0, 0), regions=[],
                            occluder=mask_models["occluder"]).masks([face])[0]
    assert mask[170:200, 80:120].max() < 0.01
    assert mask[100, 170] > 0.99  # the face beside it is swapped
    stored = as_patch_mask(mask)
    assert stored.dtype == np.uint8 and stored[185, 100] == 0 and stored[100, 170] == 255


def test_a_mask_that_swaps_everything_needs_no_patch_mask():
    assert as_patch_mask(None) is None
    assert as_patch_mask(np.ones((8, 8), np.float32)) is None


def test_mask_models_come_with_the_mask_types_that_need_them():
    assert "occluder" not in models_for("insightface", "none", "fp32", face_mask=["box"])
    chosen = models_for("insightface", "none", "fp32", face_mask=["box", "occlusion", "region"])
    assert chosen["occluder"] == "xseg_1" and chosen["parser"] == "bisenet_resnet_34"
    # The offline backend makes its own occlusion and regions: no model.
    offline = models_for("offline", "none", "fp32", face_mask=["box", "occlusion", "region"])
    assert "occluder" not in offline and "parser" not in offline


def _pasted(frame, fake, mask, side=SIDE):
    """`fake` pasted as a swapped aligned crop whose frame -> crop matrix is a plain shift: the
    crop is the frame's square at (100, 80)."""
    from facepipe.media.patches import Patch, apply_patch

    matrix = np.array([[1.0, 0.0, -100.0], [0.0, 1.0, -80.0]])
    out = frame.copy()
    apply_patch(out, Patch(kind="eroded_crop", image=fake, matrix=matrix, mask=as_patch_mask(mask)))
    return out, frame[80:80 + side, 100:100 + side], out[80:80 + side, 100:100 + side]


def test_the_occlusion_stand_ins_mask_reaches_the_paste(mask_models):
    frame = np.zeros((480, 480, 3), np.uint8)
    frame[80:80 + SIDE, 100:100 + SIDE] = synthetic_face()
    frame[80 + 150:80 + 220, 100 + 60:100 + 140] = 5  # a dark object over the face
    crop = frame[80:80 + SIDE, 100:100 + SIDE]
    mask = AlignedCropMasks(["box", "occlusion"], blur=0.3, padding=(0, 0, 0, 0), regions=[],
                            occluder=mask_models["occluder"]).masks([crop])[0]
    fake = np.full((SIDE, SIDE, 3), (30, 200, 30), np.uint8)  # the "swapped" face: plain green
    _, before, after = _pasted(frame, fake, mask)
    assert np.array_equal(after[165:205, 80:120], before[165:205, 80:120])  # the object stays in front
    assert (after[100, 128] != before[100, 128]).any()  # the face beside it is swapped


def test_mouth_keeps_the_targets_mouth_on_the_learned_path():
    frame = np.zeros((480, 480, 3), np.uint8)
    frame[80:80 + SIDE, 100:100 + SIDE] = synthetic_face()
    mask = AlignedCropMasks(["mouth"], blur=0.3, padding=(0, 0, 0, 0), regions=[]).masks(
        [frame[80:80 + SIDE, 100:100 + SIDE]])[0]
    fake = np.full((SIDE, SIDE, 3), (30, 200, 30), np.uint8)
    _, before, after = _pasted(frame, fake, mask)
    mx, my = (TEMPLATES["arcface_128"][3:5].mean(0) * SIDE).round().astype(int)
    assert np.array_equal(after[my - 4:my + 4, mx - 8:mx + 8], before[my - 4:my + 4, mx - 8:mx + 8])
    nx, ny = (TEMPLATES["arcface_128"][2] * SIDE).round().astype(int)
    assert (after[ny - 10, nx] != before[ny - 10, nx]).any()  # the nose is swapped
