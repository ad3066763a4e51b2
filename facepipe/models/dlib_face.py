"""The offline backend's dlib parts: identity embeddings, used by facepipe.models.face_mesh.MeshAnalyzer
(the offline backend's analyzer). dlib's HOG detector with 68 landmarks, the baseline the tests
compare MeshAnalyzer with, lives with the tests (tests/hog_analyzer.py).

Its weights come inside PyPI packages (``face-recognition-models``, used with the prebuilt
``dlib-bin`` wheel), so it works on a machine that has never downloaded a model:

* detection: dlib's HOG + linear SVM frontal face detector (built into dlib, no file);
* landmarks: ``shape_predictor_68_face_landmarks.dat`` (iBUG 300-W 68-point layout);
* identity: ``dlib_face_recognition_resnet_model_v1.dat``, a 128-D embedding compared by
  Euclidean distance (dlib's convention: under ~0.6 = same person), not cosine distance.

The 5 alignment keypoints of the faces table are derived from the 68 landmarks (eye
centres, nose tip, mouth corners, in insightface's order) so the table has the same
columns whichever backend made it; ``landmarks`` carries the 68 points for the classic
swapper.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from facepipe.models import package_file, spec

log = logging.getLogger(__name__)

# The registry (facepipe.models.registry) says which file of which package each model is.
INSTALL_HINT = "pip install dlib-bin==20.0.1.post1 face-recognition-models==0.3.0 (both are in requirements.txt)"


# Indices of the 68-point layout used for the 5 keypoints.
_LEFT_EYE = slice(36, 42)   # the eye on the image's left (the person's right eye)
_RIGHT_EYE = slice(42, 48)
_NOSE_TIP = 30
_MOUTH_LEFT, _MOUTH_RIGHT = 48, 54


class OfflineModelError(Exception):
    """The offline backend's packages or model files are missing."""


def offline_model_path(key: str) -> Path:
    """Where the offline model ``key`` of the registry lies (inside the installed package)."""

    model = spec(key)
    if not model.package:
        raise KeyError(f"model {key!r} is not a file inside an installed package")
    try:
        return package_file(model.package, model.filename)
    except FileNotFoundError as exc:
        raise OfflineModelError(f"{exc}; {INSTALL_HINT}") from None


def kps_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """The 5 keypoints (left eye, right eye, nose, left mouth, right mouth) from 68 landmarks."""
    lm = np.asarray(landmarks, dtype=np.float32).reshape(68, 2)
    return np.stack([lm[_LEFT_EYE].mean(axis=0), lm[_RIGHT_EYE].mean(axis=0), lm[_NOSE_TIP],
                     lm[_MOUTH_LEFT], lm[_MOUTH_RIGHT]]).astype(np.float32)


def import_dlib():
    try:
        # lazy: dlib is slow to import, and only this path needs it
        import dlib
    except ImportError as exc:
        raise OfflineModelError(f"the offline backend needs dlib ({exc}); {INSTALL_HINT}") from None
    return dlib


def check_model_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise OfflineModelError(f"{what} model {str(path)!r} is missing or empty; {INSTALL_HINT}")
    return path


