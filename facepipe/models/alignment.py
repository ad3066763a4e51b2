"""Five-point face alignment: the templates the face models were trained on, and the similarity
transform that maps a face's keypoints onto one.

The keypoints are insightface's five (the eye on the image's left, the other eye, the nose tip,
the mouth's left and right corners). Each template gives where a model expects them, as
fractions of its input side, so one template serves any crop size (and pixel boost).

``similarity`` is the least-squares rotation + uniform scale + translation (no reflection) in
closed form, the same transform as scikit-image's ``SimilarityTransform.estimate`` (Umeyama)
that ``insightface.utils.face_align.estimate_norm`` uses, at about a tenth of its cost: every
detected and every swapped face is aligned, so this is on the hot path of two stages.
"""

from __future__ import annotations

import numpy as np

# insightface's ArcFace template (face_align.arcface_dst) on its 112 px canvas.
_ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)

TEMPLATES: dict[str, np.ndarray] = {
    # The ArcFace recognizers' crop (insightface estimate_norm(kps, 112)).
    "arcface_112_v2": _ARCFACE_112 / 112.0,
    # inswapper's and hyperswap's crop: the 112 template on a 128 canvas, moved 8 px right
    # (insightface estimate_norm(kps, 128)).
    "arcface_128": (_ARCFACE_112 + (8.0, 0.0)) / 128.0,
    # SimSwap's crop (FaceFusion's WARP_TEMPLATES["arcface_112_v1"]).
    "arcface_112_v1": np.array([[0.35473214, 0.45658929], [0.64526786, 0.45658929], [0.50000000, 0.61154464],
                                [0.37913393, 0.77687500], [0.62086607, 0.77687500]], np.float64),
    # The FFHQ crop the face restorers (GFPGAN, CodeFormer, GPEN, RestoreFormer++) were trained on.
    "ffhq_512": np.array([[0.37691676, 0.46864664], [0.62285697, 0.46912813], [0.50123859, 0.61331904],
                          [0.39308822, 0.72541100], [0.61150205, 0.72490465]], np.float64),
}


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, translation) that maps the points ``src``
    onto ``dst`` with the least squared error.

    In complex numbers the transform is z -> a z + b, and the least-squares a over centred
    points is sum(conj(s) d) / sum(|s|^2): a rotation by arg(a) and a scale |a|, never a
    reflection, which is what Umeyama's SVD gives for a similarity in the plane.
    """
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    s = src[:, 0] + 1j * src[:, 1]
    d = dst[:, 0] + 1j * dst[:, 1]
    sc, dc = s - s.mean(), d - d.mean()
    norm = float(np.vdot(sc, sc).real)
    if norm <= 0.0:
        raise ValueError("the keypoints are all one point: no alignment")
    a = np.vdot(sc, dc) / norm  # vdot conjugates its first argument
    b = d.mean() - a * s.mean()
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]], np.float64)


def template_points(template: str, size: int) -> np.ndarray:
    """Where ``template`` puts the five keypoints on a ``size``-pixel square."""
    try:
        return TEMPLATES[template] * float(size)
    except KeyError:
        raise ValueError(f"unknown alignment template {template!r}; known: {sorted(TEMPLATES)}") from None


def alignment_matrix(kps, template: str, size: int) -> np.ndarray:
    """The 2x3 frame -> crop matrix that puts the keypoints ``kps`` (5x2, or 10 numbers) where
    ``template`` wants them on a ``size``-pixel crop."""
    return similarity(np.asarray(kps, np.float64).reshape(5, 2), template_points(template, size))
