"""dlib's HOG detector with 68 landmarks and dlib identity: the baseline the tests compare the
offline backend's MediaPipe analyzer with (recall on turned and small faces), and the analyzer the
tracking clips are checked with. Test code only: no backend runs it.

Its weights come inside PyPI packages (``face-recognition-models``, with the prebuilt ``dlib-bin``
wheel): detection is dlib's HOG + linear SVM frontal face detector (built into dlib, no file),
landmarks ``shape_predictor_68_face_landmarks.dat`` (iBUG 300-W 68-point layout).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from facepipe.models.dlib_face import OfflineModelError, check_model_file, import_dlib, kps_from_landmarks
from facepipe.models.registry import package_file

# The HOG detector scans an 80x80 window; upsampling small frames once lets it find faces
# down to ~40 px, which the faces of a group shot in a 640x360 video are.
UPSAMPLE_BELOW = 1000


def landmarks_model_path() -> Path:
    """dlib's 68-point shape predictor, inside the installed face-recognition-models package."""
    return package_file("face_recognition_models", "shape_predictor_68_face_landmarks.dat")


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
        dlib = import_dlib()
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        try:
            self.predictor = dlib.shape_predictor(str(check_model_file(landmarks_model, "landmark")))
            self.recognizer = dlib.face_recognition_model_v1(str(check_model_file(recognizer, "recognition")))
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
        (detection embeds a sample of the frames, facepipe.faces.detection.IDENTITY_EVERY)."""
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


    def analyze_frames(self, items: Iterable[tuple], first_frame: int = 1):
        """Faces of every (working frame, embed) pair (facepipe.media.video.WorkFrame), in order; over
        `threads` worker processes (the detector on every frame: first_frame does not matter here).

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
