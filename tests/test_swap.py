"""The learned backend's swap: ROI paste-back equals insightface's full-frame paste-back."""

import cv2
import numpy as np
import pytest

from facepipe.media.demo import insightface_image
from facepipe.models.face_analyzer import FaceAnalyzer
from facepipe.models.standin import build_standin
from tests.model_helpers import inswapper, paste_back, swap_crops


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models") / "standin"
    d.mkdir()
    return {k: build_standin(k, d / f"{k}.onnx") for k in ("det_10g", "w600k_r50", "inswapper_128")}


@pytest.mark.parametrize("size", [(640, 360), (1920, 1080)])
def test_roi_paste_back_matches_insightface(models, size):
    from insightface.app.common import Face

    img = cv2.resize(cv2.imread(str(insightface_image())), size)
    found = FaceAnalyzer(models["det_10g"], models["w600k_r50"], ["cpu"]).analyze(img)[0]
    face = Face(bbox=found["box"], kps=found["kps"], det_score=found["score"])
    source = Face(embedding=np.random.default_rng(0).standard_normal(512).astype(np.float32))
    import onnxruntime as ort
    from insightface.model_zoo.inswapper import INSwapper

    path = str(models["inswapper_128"])
    model = INSwapper(model_file=path, session=ort.InferenceSession(path, providers=["CPUExecutionProvider"]))
    reference = model.get(img, face, source, paste_back=True)
    fake, matrix = model.get(img, face, source, paste_back=False)
    ours = paste_back(img, fake, matrix)
    assert np.abs(reference.astype(int) - ours.astype(int)).max() <= 2
    changed = np.abs(ours.astype(int) - img.astype(int)).sum(axis=2) > 0
    assert changed.any() and changed.mean() < 0.5


def insightface_paste_back(img, fake, matrix, mask):
    """insightface's paste-back (INSwapper.get, paste_back=True) on the whole frame, its feather
    times a paste mask warped into the frame (facepipe.media.patches.Patch.mask)."""
    h, w = img.shape[:2]
    inverse = cv2.invertAffineTransform(matrix)
    warped_fake = cv2.warpAffine(fake, inverse, (w, h), borderValue=0.0)
    white = cv2.warpAffine(np.full((128, 128), 255, np.float32), inverse, (w, h), borderValue=0.0)
    white[white > 20] = 255
    rows, cols = np.where(white == 255)
    mask_size = int(np.sqrt((rows.max() - rows.min()) * (cols.max() - cols.min())))
    k = max(mask_size // 10, 10)
    feather = cv2.erode(white, np.ones((k, k), np.uint8), iterations=1)
    k = max(mask_size // 20, 5)
    feather = cv2.GaussianBlur(feather, (2 * k + 1, 2 * k + 1), 0) / 255
    weight = feather * cv2.warpAffine(mask, inverse, (w, h), borderMode=cv2.BORDER_REPLICATE) / 255
    return (weight[:, :, None] * warped_fake + (1 - weight[:, :, None]) * img.astype(np.float32)).astype(np.uint8)


@pytest.mark.parametrize("size", [(640, 360), (1920, 1080)])
def test_masked_roi_paste_back_matches_insightface_with_the_mask(size):
    """The feather made around the face (at half resolution when wide) times the patch's mask."""
    img = cv2.resize(cv2.imread(str(insightface_image())), size)
    rng = np.random.default_rng(3)
    fake = cv2.GaussianBlur(rng.integers(0, 256, (128, 128, 3), np.uint8), (0, 0), 3)
    to_frame = cv2.getRotationMatrix2D((64, 64), 15, size[1] / 300)
    to_frame[:, 2] += np.asarray(size) / 2 - 64
    matrix = cv2.invertAffineTransform(to_frame)
    mask = np.full((128, 128), 255, np.uint8)
    cv2.circle(mask, (50, 90), 25, 0, -1)  # an object in front of the lower face
    ours = paste_back(img, fake, matrix, mask)

    def off(got, want):
        return np.abs(got.astype(int) - want.astype(int)).max()

    # The feather is made in 8 bits and rounded where insightface's is float and truncated: 2 or
    # 3 levels off at a few pixels of strong contrast, with the mask as without it.
    unmasked = off(paste_back(img, fake, matrix), insightface_paste_back(img, fake, matrix, np.full_like(mask, 255)))
    assert off(ours, insightface_paste_back(img, fake, matrix, mask)) <= max(unmasked, 2) <= 3
    assert not np.array_equal(ours, paste_back(img, fake, matrix))


def test_io_bound_swapper_gives_the_same_patches(models):
    """The GPU path's IO binding (constant source latent bound once), run on CPU here."""
    rng = np.random.default_rng(5)
    crop = rng.integers(0, 256, (128, 128, 3), np.uint8)
    matrix = np.eye(2, 3)
    plain = inswapper(models["inswapper_128"], io_binding=False)
    bound = inswapper(models["inswapper_128"], io_binding=True)
    assert bound.runner.bound is not None and plain.runner.bound is None
    for seed in (0, 0, 1):  # the same source twice, then another: the bound latent must follow
        source = np.random.default_rng(seed).standard_normal(512).astype(np.float32)
        want = swap_crops(plain, [crop], [matrix], source)[0].image
        got = swap_crops(bound, [crop], [matrix], source)[0].image
        assert np.array_equal(got, want)
    other = swap_crops(bound, [crop], [matrix], np.random.default_rng(0).standard_normal(512).astype(np.float32))[0]
    assert not np.array_equal(other.image, got)
