"""The offline backend's dlib parts: identity embeddings (used by facepipe.mesh.MeshAnalyzer, the
offline backend's analyzer), and dlib's HOG detector with 68 landmarks (OfflineAnalyzer, registry
entry dlib_landmarks_68: the baseline the tests compare MeshAnalyzer with).

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
from typing import Iterable

import cv2
import numpy as np

log = logging.getLogger(__name__)

# The registry (facepipe.models.registry) says which file of which package each model is.
INSTALL_HINT = "pip install dlib-bin==20.0.1.post1 face-recognition-models==0.3.0 (both are in requirements.txt)"

# The HOG detector scans an 80x80 window; upsampling small frames once lets it find faces
# down to ~40 px, which the faces of a group shot in a 640x360 video are.
UPSAMPLE_BELOW = 1000

# Indices of the 68-point layout used for the 5 keypoints.
_LEFT_EYE = slice(36, 42)   # the eye on the image's left (the person's right eye)
_RIGHT_EYE = slice(42, 48)
_NOSE_TIP = 30
_MOUTH_LEFT, _MOUTH_RIGHT = 48, 54


class OfflineModelError(Exception):
    """The offline backend's packages or model files are missing."""


def offline_model_path(key: str) -> Path:
    """Where the offline model ``key`` of the registry lies (inside the installed package)."""
    from facepipe.models import package_file, spec

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


def _import_dlib():
    try:
        import dlib
    except ImportError as exc:
        raise OfflineModelError(f"the offline backend needs dlib ({exc}); {INSTALL_HINT}") from None
    return dlib


def _check_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise OfflineModelError(f"{what} model {str(path)!r} is missing or empty; {INSTALL_HINT}")
    return path


class OfflineAnalyzer:
    """dlib detection, 68 landmarks and 128-D embeddings; the interface of FaceAnalyzer.

    ``analyze`` returns the same face records (box, score, kps, embedding), largest first,
    plus ``landmarks`` (68x2). ``score`` is the HOG detector's SVM margin (0 = threshold,
    larger = more confident), not a probability.
    """

    def __init__(self, landmarks_model: str | Path, recognizer: str | Path, providers: list[str] | None = None, *,
                 threads: int = 0, upsample: int | None = None, det_thresh: float = 0.0, embed: bool = True,
                 **_onnx_options):
        # providers and the ONNX analyzers' options (precision, det_size) do not apply: dlib runs
        # on the CPU; they are accepted so that every analyzer is made the same way.
        dlib = _import_dlib()
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        try:
            self.predictor = dlib.shape_predictor(str(_check_file(landmarks_model, "landmark")))
            self.recognizer = dlib.face_recognition_model_v1(str(_check_file(recognizer, "recognition")))
        except RuntimeError as exc:  # dlib's error for a corrupt .dat file
            raise OfflineModelError(f"cannot load dlib model {landmarks_model} / {recognizer}: {exc}") from None
        self.upsample = upsample
        self.det_thresh = det_thresh
        self.threads = threads
        # embed=False leaves `embedding` None: the ResNet costs ~0.1 s per face on a CPU core,
        # most of the detection time, so detection embeds only a sample of the frames.
        self.embed = embed
        self._args = (str(landmarks_model), str(recognizer), upsample, det_thresh, embed)
        if threads > 0:
            # The detector and predictor are single-threaded; this bounds OpenCV's own pool so a
            # job stays within the threads Snakemake gave it.
            cv2.setNumThreads(threads)

    def _upsample_for(self, img: np.ndarray) -> int:
        if self.upsample is not None:
            return self.upsample
        return 1 if max(img.shape[:2]) < UPSAMPLE_BELOW else 0

    def analyze(self, img: np.ndarray, embed: bool = True) -> list[dict]:
        """Faces in one BGR image, largest first; embed=False skips the identity embedding
        (detection embeds a sample of the frames, facepipe.faces.IDENTITY_EVERY)."""
        rgb = np.ascontiguousarray(img[:, :, ::-1])
        rects, scores, _ = self.detector.run(rgb, self._upsample_for(img), self.det_thresh)
        if not rects:
            return []
        shapes = self._dlib.full_object_detections()
        for rect in rects:
            shapes.append(self.predictor(rgb, rect))
        # One call for all faces of the frame; num_jitters=0 is deterministic and fast.
        feats = (self.recognizer.compute_face_descriptor(rgb, shapes, 0) if self.embed and embed
                 else [None] * len(rects))
        h, w = img.shape[:2]
        faces = []
        for rect, score, shape, feat in zip(rects, scores, shapes, feats):
            lm = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
            # dlib's rectangles may reach past the image edge; the table holds the visible box.
            box = np.array([max(rect.left(), 0), max(rect.top(), 0), min(rect.right() + 1, w),
                            min(rect.bottom() + 1, h)], dtype=np.float32)
            faces.append({"box": box, "score": float(score), "kps": kps_from_landmarks(lm),
                          "embedding": None if feat is None else np.asarray(feat, dtype=np.float32),
                          "landmarks": lm})
        faces.sort(key=lambda f: -float((f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1])))
        return faces


    def analyze_frames(self, items: Iterable[tuple]):
        """Faces of every (working frame, embed) pair (facepipe.video.WorkFrame), in order; over
        `threads` worker processes.

        dlib's CPU ResNet is single-threaded and costs ~0.1 s per face, the bulk of the
        detection time, so frames are spread over processes (each loads the models once),
        a bounded batch at a time so memory stays a few frames per worker.
        """
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        images = ((frame.bgr(), embed) for frame, embed in items)
        workers = self.threads
        if workers <= 1:
            for img, embed in images:
                yield self.analyze(img, embed)
            return
        # The workers are forked (they inherit the loaded modules) before the first frame is
        # decoded: forking once the decoder's threads run could copy a lock one of them holds.
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                 initargs=self._args) as pool:
            pool.submit(int).result()  # starts every worker now (fork starts them all at once)
            batch = []
            for item in images:
                batch.append(item)
                if len(batch) == 4 * workers:
                    yield from pool.map(_analyze_image, batch)
                    batch = []
            if batch:
                yield from pool.map(_analyze_image, batch)


_worker: OfflineAnalyzer | None = None


def _init_worker(landmarks_model: str, recognizer: str, upsample: int | None, det_thresh: float,
                 embed: bool) -> None:
    global _worker
    _worker = OfflineAnalyzer(landmarks_model, recognizer, threads=1, upsample=upsample, det_thresh=det_thresh,
                              embed=embed)


def _analyze_image(item: tuple[np.ndarray, bool]) -> list[dict]:
    return _worker.analyze(*item)


def embedding_distance(a: np.ndarray, b: np.ndarray) -> float:
    """dlib's identity distance: Euclidean between 128-D descriptors."""
    return float(np.linalg.norm(np.asarray(a, np.float32).reshape(-1) - np.asarray(b, np.float32).reshape(-1)))
