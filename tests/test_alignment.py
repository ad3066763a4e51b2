"""Five-point alignment (facepipe.models.alignment): the same transforms insightface's estimate_norm
gives, the templates FaceFusion's models use, and no reflection."""

import numpy as np
import pytest
from insightface.utils import face_align

from facepipe.models.alignment import TEMPLATES, alignment_matrix, similarity, template_points


def _faces(count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        angle = rng.uniform(-np.pi, np.pi)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        kps = face_align.arcface_dst @ rotation.T * rng.uniform(0.3, 6) + rng.uniform(0, 1500, 2)
        yield (kps + rng.normal(0, 3, (5, 2))).astype(np.float32)


@pytest.mark.parametrize("size, template", [(112, "arcface_112_v2"), (128, "arcface_128"), (256, "arcface_128"),
                                            (512, "arcface_128")])
def test_matches_insightface_estimate_norm(size, template):
    for kps in _faces(300):
        expected = face_align.estimate_norm(kps, size)
        got = alignment_matrix(kps, template, size)
        assert np.allclose(got, expected, rtol=1e-5, atol=1e-5 * size)


def test_exact_points_map_exactly_and_no_reflection():
    dst = template_points("ffhq_512", 512)
    angle = 0.4
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = (dst - 256) @ rotation.T * 0.37 + (900, 300)
    matrix = similarity(src, dst)
    mapped = np.hstack([src, np.ones((5, 1))]) @ matrix.T
    assert np.allclose(mapped, dst, atol=1e-9)
    # A mirrored face still gets a rotation (positive determinant), never a flip.
    mirrored = src * (-1, 1)
    assert np.linalg.det(similarity(mirrored, dst)[:, :2]) > 0


def test_every_template_is_five_points_inside_the_unit_square():
    for name, points in TEMPLATES.items():
        assert points.shape == (5, 2) and (points > 0).all() and (points < 1).all(), name
        assert points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0], name  # left before right


def test_bad_keypoints_and_templates_are_refused():
    with pytest.raises(ValueError, match="one point"):
        similarity(np.ones((5, 2)), template_points("arcface_128", 128))
    with pytest.raises(ValueError, match="unknown alignment template"):
        alignment_matrix(np.zeros((5, 2)), "arcface_999", 128)
