"""The learned backends' analyzer: SCRFD detection, five keypoints and ArcFace identity
embeddings, with insightface's model classes (facepipe.faces.detection turns its faces into rows).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from facepipe.models.alignment import alignment_matrix
from facepipe.models.runtime import create_session


DET_SIZE = (640, 640)


class FaceError(Exception):
    """A face that should be there is not (e.g. a source image without a face)."""


def box_area(box) -> float:
    return float(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]))


class FaceAnalyzer:
    """SCRFD detection plus ArcFace embeddings, each model loaded once per job."""

    def __init__(self, detector: str | Path, recognizer: str | Path, providers: list[str], *,
                 threads: int = 0, det_thresh: float = 0.5, precision: str = "fp32",
                 det_size: int = DET_SIZE[0], embed: bool = True):
        from insightface.model_zoo.arcface_onnx import ArcFaceONNX
        from insightface.model_zoo.scrfd import SCRFD

        det_session = create_session(detector, providers, threads=threads, precision=precision)
        self.det_size = (det_size, det_size)
        # static_shape_sessions=False: keep our one session (and its provider) for every size.
        self.detector = SCRFD(model_file=str(detector), session=det_session, static_shape_sessions=False)
        self.detector.prepare(0, input_size=self.det_size, det_thresh=det_thresh)
        # embed=False leaves `embedding` None: only faces=reference compares target faces.
        self.recognizer = None
        if embed:
            rec_session = create_session(recognizer, providers, threads=threads, precision=precision)
            self.recognizer = ArcFaceONNX(model_file=str(recognizer), session=rec_session)

    def analyze(self, img: np.ndarray, embed: bool = True) -> list[dict]:
        """Faces in one BGR image, largest first, each with box, score, kps and embedding."""
        det, kpss = self.detector.detect(img, input_size=self.det_size)
        size = self.recognizer.input_size[0] if self.recognizer else 0
        crop = lambda kps: cv2.warpAffine(img, alignment_matrix(kps, "arcface_112_v2", size), (size, size),  # noqa: E731
                                          borderValue=0.0)
        return self._faces(det, kpss, crop, embed)

    def analyze_frames(self, items: Iterable[tuple]) -> Iterator[list[dict]]:
        """analyze_frame of every (working frame, embed) pair, in order."""
        for frame, embed in items:
            yield self.analyze_frame(frame, embed)

    def analyze_frame(self, frame, embed: bool = True) -> list[dict]:
        """analyze() of a working frame (facepipe.media.video.WorkFrame) without converting all of it:
        the detector gets the frame already at its input size, scaled from the YUV planes, and
        the recognizer's crops are warped from the planes."""
        h, w = frame.shape
        small = frame.scaled_bgr(detector_size(w, h, self.det_size[0]))
        # The detector's input fits the frame's shape (its sides multiples of the largest
        # stride, 32) instead of a square that is 44% padding for 16:9: a third less work.
        input_size = tuple(-(-side // 32) * 32 for side in (small.shape[1], small.shape[0]))
        det, kpss = self.detector.detect(small, input_size=input_size)
        scale = np.array([w / small.shape[1], h / small.shape[0]], np.float32)
        det[:, :4] *= np.tile(scale, 2)
        if kpss is not None:
            kpss = kpss * scale
        size = self.recognizer.input_size[0] if self.recognizer else 0
        crop = lambda kps: frame.warp_bgr(alignment_matrix(kps, "arcface_112_v2", size), size)  # noqa: E731
        return self._faces(det, kpss, crop, embed)

    def _faces(self, det, kpss, crop, embed: bool = True) -> list[dict]:
        if det.shape[0] == 0:
            return []
        if self.recognizer is None or not embed:
            feats = [None] * len(det)
        else:
            # One batched recognizer call for all faces of the frame.
            feats = self.recognizer.get_feat([crop(kps) for kps in kpss]).reshape(len(det), -1)
        faces = []
        for box, kps, feat in zip(det, kpss, feats):
            faces.append({"box": box[:4].astype(np.float32), "score": float(box[4]),
                          "kps": kps.astype(np.float32),
                          "embedding": None if feat is None else feat.astype(np.float32)})
        faces.sort(key=lambda f: -box_area(f["box"]))
        return faces


def detector_size(w: int, h: int, det_size: int) -> tuple[int, int]:
    """The size SCRFD scales a w x h frame to for a square input (the longer side becomes
    det_size), rounded down to even so the frame can be scaled in YUV 4:2:0."""
    if h > w:
        sw, sh = int(det_size / (h / w)), det_size
    else:
        sw, sh = det_size, int(det_size * (h / w))
    return max(2, sw // 2 * 2), max(2, sh // 2 * 2)
