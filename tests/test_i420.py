"""Pasting and converting in YUV 4:2:0 where the faces are, against doing it on whole BGR frames."""

import cv2
import numpy as np
import pytest

from facepipe.media.demo import insightface_image
from facepipe.media.i420 import bgr_to_yuv444, block_means, flat_picture, flatness, region_bgr, split_i420, write_region
from facepipe.media.patches import Patch, apply_patch, apply_patches_i420, paste_eroded_crop
from facepipe.media.video import WorkFrame

W, H = 1280, 720


@pytest.fixture(scope="module")
def frame():
    """A decoded-like I420 frame of a real photo whose BGR round trip is exact almost everywhere."""
    img = cv2.resize(cv2.imread(str(insightface_image("t1.jpg"))), (W, H))
    i420 = cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420)
    return cv2.cvtColor(cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420), cv2.COLOR_BGR2YUV_I420)


def crop_matrix(centre, scale, angle):
    """frame -> crop matrix of a 128 px crop shown `scale` times larger, rotated, at `centre`."""
    to_frame = cv2.getRotationMatrix2D((0, 0), angle, scale)
    to_frame[:, 2] = np.asarray(centre) - to_frame[:, :2] @ (64, 64)
    return cv2.invertAffineTransform(to_frame)


def box_averaged_i420(bgr):
    """BGR to Y plus 2x2-averaged U and V (OpenCV's own I420 conversion takes one pixel's chroma)."""
    y, u, v = bgr_to_yuv444(bgr)
    half = (bgr.shape[1] // 2, bgr.shape[0] // 2)
    return [y.astype(int)] + [np.round(cv2.resize(c.astype(np.float32), half, interpolation=cv2.INTER_AREA))
                              .astype(int) for c in (u, v)]


def test_region_conversion_equals_whole_frame_conversion(frame):
    planes = split_i420(frame.copy(), W, H)
    whole = cv2.cvtColor(frame, cv2.COLOR_YUV2BGR_I420)
    rect = (100, 50, 420, 306)
    roi = region_bgr(planes, rect)
    assert np.array_equal(roi, whole[50:306, 100:420])
    # Written back unchanged, the region is what converting the whole frame back gives there.
    write_region(planes, roi, rect)
    back = cv2.cvtColor(whole, cv2.COLOR_BGR2YUV_I420)
    y, u, v = split_i420(back, W, H)
    assert np.array_equal(planes[0][50:306, 100:420], y[50:306, 100:420])
    assert np.array_equal(planes[1][25:153, 50:210], u[25:153, 50:210])


def test_yuv444_uses_opencv_coefficients():
    bgr = np.random.default_rng(0).integers(0, 256, (16, 16, 3), np.uint8)
    y, u, v = bgr_to_yuv444(bgr)
    # OpenCV's I420 conversion of the image itself: same luma, and the chroma of each block's
    # top-left pixel.
    ry, ru, rv = split_i420(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420), 16, 16)
    assert np.array_equal(y, ry)
    assert np.array_equal(u[::2, ::2], ru) and np.array_equal(v[::2, ::2], rv)


def paste_mask(kind):
    """A patch's paste mask (Patch.mask) on a 128 px crop: none, the left half kept, or a round
    object in front of the lower face (hard edges: the hardest case for 4:2:0 chroma)."""
    if kind is None:
        return None
    mask = np.full((128, 128), 255, np.uint8)
    if kind == "half":
        mask[:, :64] = 0
    else:
        cv2.circle(mask, (50, 90), 25, 0, -1)
    return mask


@pytest.mark.parametrize("mask", [None, "half", "object"])
@pytest.mark.parametrize("scale, angle", [(5.0, 0), (5.0, 25), (2.5, 45), (1.0, 10), (0.4, -30)])
def test_swapped_face_pasted_in_yuv_matches_the_bgr_paste(frame, scale, angle, mask):
    rng = np.random.default_rng(1)
    fake = cv2.GaussianBlur(rng.integers(0, 256, (128, 128, 3), np.uint8), (0, 0), 3)
    matrix = crop_matrix((640, 300), scale, angle)
    mask = paste_mask(mask)

    reference = cv2.cvtColor(frame, cv2.COLOR_YUV2BGR_I420)
    paste_eroded_crop(reference, fake, matrix, mask)  # itself within 2 levels of insightface (test_swap.py)
    ours = frame.copy()
    rect = apply_patches_i420(ours, [Patch("eroded_crop", fake, matrix, mask=mask)])

    # Compared where the paste changed the frame and the frame's own BGR round trip is exact
    # (elsewhere the BGR path starts from clipped colours).
    exact = cv2.cvtColor(cv2.cvtColor(frame, cv2.COLOR_YUV2BGR_I420), cv2.COLOR_BGR2YUV_I420) == frame
    changed = ours != frame
    assert changed.any()
    for got, want, mask in zip(split_i420(ours, W, H), box_averaged_i420(reference),
                               split_i420(changed & exact, W, H)):
        assert np.abs(got.astype(int) - want)[mask].max() <= 2
    # Nothing outside the returned rectangle changed.
    x0, y0, x1, y1 = rect
    outside = np.ones((H, W), bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(split_i420(ours, W, H)[0][outside], split_i420(frame, W, H)[0][outside])


def test_other_patches_convert_only_their_rectangle(frame):
    rng = np.random.default_rng(2)
    enhanced = rng.integers(0, 256, (512, 512, 3), np.uint8)
    ffhq = Patch("feathered_crop", enhanced, crop_matrix((400, 360), 0.5, 15) * [[4], [4]])
    pixels = Patch("pixels", rng.integers(0, 256, (41, 33, 3), np.uint8), x=901, y=203)
    for patch in (ffhq, pixels):
        whole = cv2.cvtColor(frame, cv2.COLOR_YUV2BGR_I420)
        assert apply_patch(whole, patch) is not None
        want = split_i420(cv2.cvtColor(whole, cv2.COLOR_BGR2YUV_I420), W, H)
        ours = frame.copy()
        x0, y0, x1, y1 = apply_patches_i420(ours, [patch])
        got = split_i420(ours, W, H)
        # Inside: exactly the whole-frame result; outside: untouched (no conversion round trip).
        assert np.array_equal(got[0][y0:y1, x0:x1], want[0][y0:y1, x0:x1])
        chroma = (slice(y0 // 2, y1 // 2), slice(x0 // 2, x1 // 2))
        assert np.array_equal(got[1][chroma], want[1][chroma])
        untouched = np.ones((H, W), bool)
        untouched[y0:y1, x0:x1] = False
        assert np.array_equal(got[0][untouched], split_i420(frame, W, H)[0][untouched])


def test_work_frame_scales_and_crops_from_the_planes_as_from_bgr(frame):
    work = WorkFrame(1, i420=frame.copy())
    bgr = cv2.cvtColor(frame, cv2.COLOR_YUV2BGR_I420)
    small = work.scaled_bgr((640, 360))
    diff = np.abs(small.astype(int) - cv2.resize(bgr, (640, 360)).astype(int))
    # Chroma is scaled from its own half-resolution plane, so colour edges differ a little.
    assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 12
    matrix = crop_matrix((700, 330), 2.0, 20)  # a crop reaching past nothing: all inside
    crop = work.warp_bgr(matrix, 128)
    diff = np.abs(crop.astype(int) - cv2.warpAffine(bgr, matrix, (128, 128), borderValue=0.0).astype(int))
    assert crop.shape == (128, 128, 3) and diff.mean() < 1.0 and np.percentile(diff, 99) <= 4
    # Outside the frame a crop is black, as the BGR warp makes it.
    edge = work.warp_bgr(crop_matrix((5, 5), 1.0, 0), 128)
    assert edge[:40, :40].max() <= 1 and edge[100:, 100:].mean() > 10
    assert work.shape == (H, W) and work.bgr().shape == (H, W, 3)


def test_work_frame_converts_a_rectangle_to_the_same_pixels_as_the_whole_frame(frame):
    """bgr_rect (detection's face crops, without converting the whole frame) gives exactly the
    pixels of bgr() there, at odd corners too, and the same once the frame has been converted."""
    bgr = cv2.cvtColor(frame, cv2.COLOR_YUV2BGR_I420)
    for x0, y0, x1, y1 in [(0, 0, W, H), (1, 1, 2, 2), (101, 37, 480, 333), (W - 7, H - 3, W, H), (640, 200, 641, 201)]:
        fresh = WorkFrame(1, i420=frame.copy())
        assert np.array_equal(fresh.bgr_rect(x0, y0, x1, y1), bgr[y0:y1, x0:x1]), (x0, y0, x1, y1)
        fresh.bgr()
        assert np.array_equal(fresh.bgr_rect(x0, y0, x1, y1), bgr[y0:y1, x0:x1])


def test_flat_picture_agrees_with_the_block_means():
    """flat_picture's first look at a few samples only ever says "not flat" early; whatever it
    answers is what the block means say."""
    rng = np.random.default_rng(2)
    grain = np.clip(30 + rng.normal(0, 3, (720, 1280)), 0, 255).astype(np.uint8)
    dim_face = grain.copy()  # a dim face in a dark shot: the samples alone do not tell
    cv2.ellipse(dim_face, (640, 360), (16, 20), 0, 0, 360, 50, -1)
    cv2.circle(dim_face, (634, 354), 3, 20, -1)
    bright = grain.copy()
    bright[100:200, 100:200] = 230
    for picture, flat in ((grain, True), (dim_face, False), (bright, False), (np.zeros((720, 1280), np.uint8), True)):
        assert flat_picture(picture) is flat
        assert flatness(picture)(0, 0, 1280, 720) is flat
        assert flat_picture(cv2.cvtColor(picture, cv2.COLOR_GRAY2BGR)) is flat


@pytest.mark.parametrize("shape", [(1080, 1920), (720, 1280), (2160, 3840), (480, 854), (1920, 1080)])
def test_block_means_are_opencvs_area_resize(shape):
    """block_means gives cv2.resize's INTER_AREA bytes at the still thumbnail's 32x18 grid, on
    noise, on blocks whose mean is a tie (half a level) and on every flat level: summed where the
    grid cuts whole blocks (1080p, 720p, 4K), OpenCV's own resize elsewhere."""
    rng = np.random.default_rng(3)
    ties = np.zeros(shape, np.uint8)
    ties[:, ::2] = 1  # each block of an even width sums to half its area
    planes = [rng.integers(0, 256, shape, dtype=np.uint8), ties,
              (np.arange(shape[0] * shape[1]) % 251).astype(np.uint8).reshape(shape)]
    planes += [np.full(shape, level, np.uint8) for level in (0, 1, 127, 128, 254, 255)]
    for plane in planes:
        assert np.array_equal(block_means(plane, (32, 18)), cv2.resize(plane, (32, 18), interpolation=cv2.INTER_AREA))


def test_block_means_are_opencvs_area_resize_for_every_square_block():
    """Square blocks of 2 to 64 px (the sums' path from 3 px), and an oblong grid (OpenCV's own)."""
    rng = np.random.default_rng(4)
    for side in range(2, 65):
        for plane in (rng.integers(0, 256, (5 * side, 7 * side), dtype=np.uint8),
                      np.tile(np.array([0, 1], np.uint8), (5 * side, 7 * side // 2 + 1))[:, :7 * side]):
            assert np.array_equal(block_means(plane, (7, 5)), cv2.resize(plane, (7, 5), interpolation=cv2.INTER_AREA))
    plane = rng.integers(0, 256, (10, 343), dtype=np.uint8)  # 49x2 px blocks
    assert np.array_equal(block_means(plane, (7, 5)), cv2.resize(plane, (7, 5), interpolation=cv2.INTER_AREA))
