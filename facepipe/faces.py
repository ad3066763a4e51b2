"""Face detection, alignment keypoints and identity embeddings, with insightface's model classes.

The faces table (one row per detected face) is the contract between detection and the
later stages: frame (1-based, matching the frame file), face (index in the frame),
box x1..y2, det score, 5 keypoints and the 512-D identity embedding.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd

from facepipe.runtime import create_session
from facepipe.tables import FACES_SCHEMA

log = logging.getLogger(__name__)

DET_SIZE = (640, 640)
# landmarks: the 68 points (flattened) from the offline backend, which its classic swapper
# needs; null for the learned backend, and readers must not rely on the column being there.
# crop: the face as the swapper takes it (encode_image), cut out at detection so the swap stage never
# decodes the video: the aligned crop and its matrix (crop_matrix, frame -> crop) for the
# learned swapper, or the landmarks' rectangle at (crop_x, crop_y) for the classic one.
FACE_COLUMNS = FACES_SCHEMA.names  # the table's types: facepipe.tables
CROP_KINDS = ("aligned_128", "landmark_box")


class FaceError(Exception):
    """A face that should be there is not (e.g. a source image without a face)."""


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

    def analyze(self, img: np.ndarray) -> list[dict]:
        """Faces in one BGR image, largest first, each with box, score, kps and embedding."""
        from insightface.utils import face_align

        det, kpss = self.detector.detect(img, input_size=self.det_size)
        crop = lambda kps: face_align.norm_crop(img, landmark=kps, image_size=self.recognizer.input_size[0])  # noqa: E731
        return self._faces(det, kpss, crop)

    def analyze_frame(self, frame) -> list[dict]:
        """analyze() of a working frame (facepipe.video.WorkFrame) without converting all of it:
        the detector gets the frame already at its input size, scaled from the YUV planes, and
        the recognizer's crops are warped from the planes."""
        from insightface.utils import face_align

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
        crop = lambda kps: frame.warp_bgr(face_align.estimate_norm(kps, size), size)  # noqa: E731
        return self._faces(det, kpss, crop)

    def _faces(self, det, kpss, crop) -> list[dict]:
        if det.shape[0] == 0:
            return []
        if self.recognizer is None:
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


def box_area(box) -> float:
    return float(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]))


def face_crop(frame, face: dict, kind: str) -> dict:
    """The crop columns of one face (see FACE_COLUMNS) from its working frame (WorkFrame)."""
    from facepipe.patches import encode_image

    if kind == "aligned_128":
        from insightface.utils import face_align

        # The crop INSwapper.get makes (norm_crop2: arcface template, 128 px), warped from the planes.
        matrix = face_align.estimate_norm(np.asarray(face["kps"]).reshape(5, 2), 128)
        return {"crop": encode_image(frame.warp_bgr(matrix, 128)), "crop_x": 0, "crop_y": 0,
                "crop_matrix": np.asarray(matrix, np.float64).reshape(-1).tolist()}
    if kind == "landmark_box":
        from facepipe.classic_swap import _hull_bbox

        img = frame.bgr()
        x0, y0, x1, y1 = _hull_bbox(np.asarray(face["landmarks"]).reshape(68, 2), img.shape[:2], 0.0)
        return {"crop": encode_image(img[y0:y1, x0:x1]), "crop_x": x0, "crop_y": y0, "crop_matrix": None}
    raise ValueError(f"unknown crop kind {kind!r}; known: {CROP_KINDS}")


def face_rows(analyzer, frames: Iterable, crop: str | None = None) -> Iterator[list[dict]]:
    """The faces-table rows of a segment's working frames (facepipe.video.WorkFrame, numbered
    from 1), one list per frame; analyzer: FaceAnalyzer or OfflineAnalyzer; crop: the kind of
    face crop to keep for the swap."""
    numbers, frames_kept = [], {}

    def seen():
        for frame in frames:
            numbers.append(frame.number)
            if crop:
                frames_kept[frame.number] = frame  # until its faces are cropped, just below
            yield frame

    # An analyzer may spread the frames over processes itself (the offline one does); the
    # learned one works on the frames' YUV planes.
    if hasattr(analyzer, "analyze_frames"):
        per_frame = analyzer.analyze_frames(frame.bgr() for frame in seen())
    else:
        per_frame = (analyzer.analyze_frame(frame) for frame in seen())
    found = with_faces = 0
    for i, faces in enumerate(per_frame):
        frame_no = numbers[i]
        frame = frames_kept.pop(frame_no, None)
        rows = []
        for j, face in enumerate(faces):
            x1, y1, x2, y2 = (float(v) for v in face["box"])
            row = {"frame": frame_no, "face": j, "x1": x1, "y1": y1, "x2": x2, "y2": y2,
                   "score": face["score"], "kps": face["kps"].reshape(-1).tolist(),
                   # None when the analyzer was asked not to embed (faces != reference)
                   "embedding": None if face["embedding"] is None else face["embedding"].tolist(),
                   "landmarks": (face["landmarks"].reshape(-1).tolist()
                                 if face.get("landmarks") is not None else None),
                   "crop": None, "crop_x": 0, "crop_y": 0, "crop_matrix": None}
            if crop:
                row.update(face_crop(frame, face, crop))
            rows.append(row)
        found += len(rows)
        with_faces += bool(rows)
        yield rows
    log.info("%d faces in %d frames (%d frames without a face)", found, len(numbers), len(numbers) - with_faces)


def detect_frames(analyzer, frames: Iterable, crop: str | None = None) -> pd.DataFrame:
    """face_rows as one table."""
    return pd.DataFrame([row for rows in face_rows(analyzer, frames, crop) for row in rows], columns=FACE_COLUMNS)


def write_faces(rows, path: str | Path) -> None:
    """A faces table, from a DataFrame or from rows given frame by frame (face_rows), written
    as it comes (facepipe.tables)."""
    from facepipe.tables import write_table

    if isinstance(rows, pd.DataFrame):
        rows = [rows.to_dict("records")]
    write_table(rows, path, FACES_SCHEMA)


def read_faces(path: str | Path) -> pd.DataFrame:
    """A whole faces table, verified (facepipe.integrity: a damaged one is removed and reported)."""
    from facepipe.tables import read_table

    return read_table(path)


def row_crop(row) -> np.ndarray:
    """The face crop a faces-table row holds for the swapper, decoded and checked against what
    detection writes (face_crop); ValueError otherwise, so a crop that decodes to the wrong
    size never reaches the swapper, which would quietly resize it."""
    from facepipe.patches import INSWAPPER_SIZE, check_matrix, decode_image

    if row.crop is None:
        raise ValueError("it has no crop (a table made before crops were kept: rerun detection)")
    crop = decode_image(row.crop)
    kps = None if row.kps is None else np.asarray(row.kps, np.float64)
    if kps is None or kps.size != 10 or not np.isfinite(kps).all():
        raise ValueError("its keypoints are not 10 finite numbers")
    if row.crop_matrix is not None:  # aligned_128
        if crop.shape[:2] != (INSWAPPER_SIZE, INSWAPPER_SIZE):
            raise ValueError(f"its aligned crop is {crop.shape[1]}x{crop.shape[0]}, not "
                             f"{INSWAPPER_SIZE}x{INSWAPPER_SIZE}")
        check_matrix(row.crop_matrix, "crop matrix")
    else:  # landmark_box: the classic swapper pastes it back at (crop_x, crop_y)
        landmarks = getattr(row, "landmarks", None)
        if landmarks is None or np.size(landmarks) != 136 or not np.isfinite(np.asarray(landmarks, float)).all():
            raise ValueError("its crop has no matrix and no 68 finite landmarks")
        if row.crop_x < 0 or row.crop_y < 0:
            raise ValueError(f"its crop corner ({row.crop_x}, {row.crop_y}) is outside the frame")
    return crop


def row_face(row) -> dict:
    """A faces-table row as the face record insightface's swapper expects (kps, box, embedding)."""
    from insightface.app.common import Face

    face = Face(bbox=np.array([row.x1, row.y1, row.x2, row.y2], dtype=np.float32),
                kps=np.asarray(row.kps, dtype=np.float32).reshape(5, 2),
                det_score=float(row.score),
                embedding=np.asarray(row.embedding, dtype=np.float32))
    # Absent in tables from before the column existed, null (None/NaN) from the learned backend.
    landmarks = getattr(row, "landmarks", None)
    if landmarks is not None and np.size(landmarks) == 136:
        face["landmarks"] = np.asarray(landmarks, dtype=np.float32).reshape(68, 2)
    return face


def normalize(vec: np.ndarray) -> np.ndarray:
    vec = np.asarray(vec, dtype=np.float32).reshape(-1)
    return vec / (np.linalg.norm(vec) + 1e-12)


def pick_face(faces: list[dict], image: str | Path, face_index: int = -1) -> dict:
    """The face of a source/reference image to use: the largest, unless an index is given."""
    if not faces:
        raise FaceError(f"no face found in image {str(image)!r}; use a photo with a clearly visible face")
    if face_index is not None and face_index >= 0:
        if face_index >= len(faces):
            raise FaceError(f"image {str(image)!r} has {len(faces)} face(s); source_face={face_index} does not exist "
                            f"(faces are numbered from 0, largest first)")
        log.info("image %s: %d faces, using face %d as asked", image, len(faces), face_index)
        return faces[face_index]
    if len(faces) > 1:
        log.warning("image %s has %d faces: using the largest (set source_face=N to choose; 0 = largest)",
                    image, len(faces))
    return faces[0]
