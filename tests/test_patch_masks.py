"""Paste masks on patches (Patch.mask): what a mask says is the target's stays the target's, in the
BGR and I420 pastes, through the patch tables and through the enhancer."""

import cv2
import numpy as np
import pytest

from facepipe.media.demo import insightface_image
from facepipe.media.i420 import split_i420
from facepipe.media.integrity import DamagedIntermediateError
from facepipe.media.patches import (
    Patch,
    apply_patch,
    apply_patches_i420,
    check_patch,
    encode_mask,
    mask_in_crop,
    patch_row,
    read_patches,
    write_patches,
)

W, H = 640, 360
CENTRE = (320, 180)


@pytest.fixture(scope="module")
def i420():
    """A photo as a decoded-like I420 frame (its BGR round trip exact almost everywhere)."""
    img = cv2.resize(cv2.imread(str(insightface_image("t1.jpg"))), (W, H))
    planes = cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420)
    return cv2.cvtColor(cv2.cvtColor(planes, cv2.COLOR_YUV2BGR_I420), cv2.COLOR_BGR2YUV_I420)


@pytest.fixture(scope="module")
def bgr(i420):
    return cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)


def crop_matrix(scale, angle, size=128):
    """frame -> crop matrix of a size x size crop shown `scale` times larger, rotated, at CENTRE."""
    to_frame = cv2.getRotationMatrix2D((0, 0), angle, scale)
    to_frame[:, 2] = np.asarray(CENTRE) - to_frame[:, :2] @ (size / 2, size / 2)
    return cv2.invertAffineTransform(to_frame)


def smooth_noise(size, seed):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), np.uint8), (0, 0), 3)


def left_half_kept(size):
    """A mask keeping the target in the crop's left half (columns < size / 2)."""
    mask = np.full((size, size), 255, np.uint8)
    mask[:, : size // 2] = 0
    return mask


def halves(matrix, size):
    """Frame pixels that land in the crop's left half (kept by left_half_kept), in its right half
    (bilinear sampling mixes the two columns either side of the mask's edge), and in the crop's
    middle (where a paste without a mask changes the frame)."""
    ys, xs = np.mgrid[0:H, 0:W]
    cx = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
    cy = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
    edge = size / 2
    middle = (cx > size / 4) & (cx < 3 * size / 4) & (cy > size / 4) & (cy < 3 * size / 4)
    return cx < edge - 1.5, cx > edge + 0.5, middle


# Scales 1 and 3: the feather made at full resolution, and the wide one made at half resolution.
GEOMETRIES = [(1.0, 10), (3.0, -25)]


def pasted(frame, patch):
    out = frame.copy()
    apply_patch(out, patch)
    return out


def pasted_i420(frame, patch):
    out = frame.copy()
    apply_patches_i420(out, [patch])
    return out


def inswapper_patch(scale, angle, mask=None):
    return Patch("eroded_crop", smooth_noise(128, 1), crop_matrix(scale, angle), mask=mask)


def ffhq_patch(mask=None):
    return Patch("feathered_crop", smooth_noise(512, 2), crop_matrix(0.5, 15, 512), mask=mask)


@pytest.mark.parametrize("scale, angle", GEOMETRIES)
def test_a_mask_of_zeros_leaves_the_frame_as_it_was(bgr, i420, scale, angle):
    for patch in (inswapper_patch(scale, angle), ffhq_patch()):
        zeros = np.zeros(patch.image.shape[:2], np.uint8)
        assert not np.array_equal(pasted(bgr, patch), bgr)  # without the mask it does paste
        masked = Patch(patch.kind, patch.image, patch.matrix, mask=zeros)
        assert np.array_equal(pasted(bgr, masked), bgr)
        got = pasted_i420(i420, masked)
        if patch.kind == "eroded_crop":  # blended in YUV: untouched exactly
            assert np.array_equal(got, i420)
        else:  # its rectangle goes to BGR and back: untouched wherever that round trip is exact
            exact = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420) == i420
            assert np.array_equal(got[exact], i420[exact])


@pytest.mark.parametrize("scale, angle", GEOMETRIES + [(0.4, 30), (5.0, 0)])
def test_a_mask_of_255_everywhere_pastes_exactly_as_no_mask(bgr, i420, scale, angle):
    for patch in (inswapper_patch(scale, angle), ffhq_patch()):
        full = Patch(patch.kind, patch.image, patch.matrix, mask=np.full(patch.image.shape[:2], 255, np.uint8))
        assert np.array_equal(pasted(bgr, full), pasted(bgr, patch))
        assert np.array_equal(pasted_i420(i420, full), pasted_i420(i420, patch))


@pytest.mark.parametrize("scale, angle", GEOMETRIES)
def test_a_half_mask_keeps_exactly_the_targets_half(bgr, i420, scale, angle):
    plain = inswapper_patch(scale, angle)
    half = inswapper_patch(scale, angle, mask=left_half_kept(128))
    kept, swapped, middle = halves(half.matrix, 128)
    unmasked, masked = pasted(bgr, plain), pasted(bgr, half)
    changed = (unmasked != bgr).any(axis=2)
    assert changed[kept & middle].mean() > 0.5  # the kept side is where the swap would have pasted
    assert np.array_equal(masked[kept], bgr[kept])
    assert np.array_equal(masked[swapped], unmasked[swapped])

    ys, us, vs = split_i420(pasted_i420(i420, half), W, H)
    y0, u0, v0 = split_i420(i420, W, H)
    assert np.array_equal(ys[kept], y0[kept])
    y_unmasked = split_i420(pasted_i420(i420, plain), W, H)[0]
    assert np.array_equal(ys[swapped], y_unmasked[swapped])
    # A chroma sample is the target's where all four pixels of its block are.
    kept_blocks = kept.reshape(H // 2, 2, W // 2, 2).all(axis=(1, 3))
    assert np.array_equal(us[kept_blocks], u0[kept_blocks]) and np.array_equal(vs[kept_blocks], v0[kept_blocks])


def test_a_half_mask_on_an_enhanced_face_keeps_the_targets_half(bgr):
    patch = ffhq_patch(mask=left_half_kept(512))
    kept, swapped, middle = halves(patch.matrix, 512)
    unmasked, masked = pasted(bgr, ffhq_patch()), pasted(bgr, patch)
    assert (unmasked != bgr).any(axis=2)[kept & middle].mean() > 0.5
    assert np.array_equal(masked[kept], bgr[kept])
    assert np.array_equal(masked[swapped], unmasked[swapped])


def test_pixels_patches_ignore_their_mask(bgr):
    """A "pixels" patch holds the swap's final pixels, its mask already applied: it only records."""
    image = smooth_noise(41, 3)[:, :33]
    plain = Patch("pixels", image, x=301, y=103)
    zeros = Patch("pixels", image, x=301, y=103, mask=np.zeros((41, 33), np.uint8))
    assert np.array_equal(pasted(bgr, zeros), pasted(bgr, plain))


def test_masks_survive_the_patch_table(tmp_path):
    rng = np.random.default_rng(4)
    masks = [rng.integers(0, 256, (128, 128), np.uint8), None, left_half_kept(512),
             rng.integers(0, 256, (9, 7), np.uint8)]
    made = [Patch("eroded_crop", smooth_noise(128, 5), np.eye(2, 3), frame=1, face=0, mask=masks[0]),
            Patch("eroded_crop", smooth_noise(128, 6), np.eye(2, 3), frame=1, face=1, mask=masks[1]),
            Patch("feathered_crop", smooth_noise(512, 7), np.eye(2, 3), frame=2, face=0, mask=masks[2]),
            Patch("pixels", smooth_noise(9, 8)[:, :7], x=3, y=4, frame=3, face=0, mask=masks[3])]
    write_patches([made[:2], made[2:3], made[3:]], tmp_path / "p.parquet")
    back = [p for frame in read_patches(tmp_path / "p.parquet").values() for p in frame]
    assert len(back) == len(made)
    for want, got in zip(made, back):
        if want.mask is None:
            assert got.mask is None
        else:
            assert got.mask.dtype == np.uint8 and np.array_equal(got.mask, want.mask)


def test_a_table_from_before_masks_reads_as_patches_without_one(tmp_path):
    import pyarrow as pa

    from facepipe.media.tables import PATCHES_SCHEMA, write_table

    patch = Patch("eroded_crop", smooth_noise(128, 9), np.eye(2, 3), frame=1)
    row = {k: v for k, v in patch_row(patch).items() if k != "mask"}
    write_table([[row]], tmp_path / "old.parquet", pa.schema([f for f in PATCHES_SCHEMA if f.name != "mask"]))
    (got,) = read_patches(tmp_path / "old.parquet")[1]
    assert got.mask is None and np.array_equal(got.image, patch.image)


@pytest.mark.parametrize("bad", ["shape", "not png", "colour", "16 bit"])
def test_a_damaged_mask_is_an_error_naming_the_table(tmp_path, bad):
    from facepipe.media.tables import PATCHES_SCHEMA, write_table

    patch = Patch("eroded_crop", smooth_noise(128, 9), np.eye(2, 3), frame=1, mask=np.full((128, 128), 255, np.uint8))
    row = patch_row(patch)
    row["mask"] = {"shape": encode_mask(np.full((64, 128), 255, np.uint8)),
                   "not png": row["mask"][8:],
                   "colour": cv2.imencode(".png", np.zeros((128, 128, 3), np.uint8))[1].tobytes(),
                   "16 bit": cv2.imencode(".png", np.zeros((128, 128), np.uint16))[1].tobytes()}[bad]
    table = tmp_path / "swapped.parquet"
    write_table([[row]], table, PATCHES_SCHEMA)
    want = {"shape": "mask is uint8 \\(64, 128\\), not uint8 128x128", "not png": "do not decode as PNG",
            "colour": "not a single-channel uint8", "16 bit": "uint16"}[bad]
    with pytest.raises(DamagedIntermediateError, match=f"swapped.parquet.*{want}"):
        read_patches(table)


def test_check_patch_refuses_a_mask_that_is_not_uint8():
    patch = Patch("eroded_crop", smooth_noise(128, 9), np.eye(2, 3), mask=np.ones((128, 128), np.float32))
    with pytest.raises(ValueError, match="its mask is float32"):
        check_patch(patch)


def test_a_swapped_faces_mask_is_carried_into_the_enhancers_crop():
    swap = Patch("eroded_crop", smooth_noise(128, 1), crop_matrix(2.0, 20), mask=left_half_kept(128))
    enhancer_matrix = crop_matrix(1.2, -5, 512)
    carried = mask_in_crop(swap, enhancer_matrix, 512)
    assert carried.shape == (512, 512) and carried.dtype == np.uint8
    # Each enhancer crop pixel: to the frame, then into the swap's crop.
    ys, xs = np.mgrid[0:512, 0:512]
    to_frame = cv2.invertAffineTransform(enhancer_matrix)
    fx = to_frame[0, 0] * xs + to_frame[0, 1] * ys + to_frame[0, 2]
    fy = to_frame[1, 0] * xs + to_frame[1, 1] * ys + to_frame[1, 2]
    sx = swap.matrix[0, 0] * fx + swap.matrix[0, 1] * fy + swap.matrix[0, 2]
    assert (carried[sx < 62.5] == 0).all() and (carried[sx > 64.5] == 255).all()
    assert (sx < 62.5).mean() > 0.2 and (sx > 64.5).mean() > 0.2
    # Beyond the swap's crop the mask goes on as at its edge: no seam along the crop's border.
    sy = swap.matrix[1, 0] * fx + swap.matrix[1, 1] * fy + swap.matrix[1, 2]
    assert ((sy < 0) | (sy > 127)).any()

    # A rectangle of pixels is carried by its corner.
    pixels = Patch("pixels", smooth_noise(40, 2), x=300, y=150, mask=left_half_kept(40))
    carried = mask_in_crop(pixels, np.array([[2.0, 0, -600], [0, 2.0, -300]]), 80)
    assert (carried[:, :38] == 0).all() and (carried[:, 42:] == 255).all()

    # Nothing to carry: no mask, or one that keeps nothing of the target there.
    assert mask_in_crop(Patch("eroded_crop", swap.image, swap.matrix), enhancer_matrix, 512) is None
    full = Patch("eroded_crop", swap.image, swap.matrix, mask=np.full((128, 128), 255, np.uint8))
    assert mask_in_crop(full, enhancer_matrix, 512) is None


class InvertingEnhancer:
    """An enhancer whose every pixel differs from its input, on a fixed 512 px crop."""

    batch_size = 2

    def crop(self, img, kps):
        matrix = crop_matrix(0.6, 10, 512)
        return cv2.warpAffine(img, matrix, (512, 512), borderMode=cv2.BORDER_REPLICATE), matrix

    def enhance(self, crops):
        return [255 - crop for crop in crops]


def test_the_enhancer_keeps_the_target_where_the_swap_did(tmp_path, bgr):
    from facepipe.swap.enhance import enhance_segment
    from facepipe.media.video import WorkFrame

    swap = Patch("eroded_crop", smooth_noise(128, 1), crop_matrix(2.0, 20), frame=1, mask=left_half_kept(128),
                 kps=np.zeros((5, 2), np.float32))
    write_patches([[swap]], tmp_path / "swapped.parquet")
    enhance_segment([WorkFrame(1, bgr=bgr.copy())], tmp_path / "swapped.parquet", InvertingEnhancer(),
                    tmp_path / "enhanced.parquet")
    patches = read_patches(tmp_path / "enhanced.parquet")[1]
    assert [p.kind for p in patches] == ["eroded_crop", "feathered_crop"]
    assert np.array_equal(patches[1].mask, mask_in_crop(swap, patches[1].matrix, 512))
    out = bgr.copy()
    for patch in patches:
        apply_patch(out, patch)
    kept, swapped, middle = halves(swap.matrix, 128)
    assert np.array_equal(out[kept], bgr[kept])
    assert (out != bgr).any(axis=2)[swapped & middle].mean() > 0.5
