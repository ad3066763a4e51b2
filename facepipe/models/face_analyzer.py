"""The learned backends' analyzer: SCRFD detection, five keypoints and ArcFace identity
embeddings, with insightface's model classes (facepipe.faces.detection turns its faces into rows).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from facepipe.faces.boxes import box_area
from facepipe.media.i420 import flat_picture
from facepipe.models.alignment import alignment_matrix
from facepipe.models.runtime import create_session

DET_SIZE = (640, 640)


class FaceError(Exception):
    """A face that should be there is not (e.g. a source image without a face)."""


class FaceAnalyzer:
    """SCRFD detection plus ArcFace embeddings, each model loaded once per job."""

    @staticmethod
    def standin_signature(spec):
        """The real SCRFD detector's or ArcFace recognizer's inputs and outputs (insightface's own
        model-loading log lines: "det_10g.onnx detection [1, 3, '?', '?']", "w600k_r50.onnx
        recognition ['None', 3, 112, 112]"; SCRFD's output names are used across many projects)."""
        # lazy: the stand-in builder, with onnx, is slow to import, and only this path needs it
        from facepipe.models.standin import ModelSignature, TensorSig

        if spec.role == "detector":
            return ModelSignature((TensorSig("input.1", "float32", (1, 3, "?", "?")),), _detector_outputs())
        return ModelSignature((TensorSig("input.1", "float32", ("None", 3, spec.size, spec.size)),),
                              (TensorSig("683", "float32", ("None", 512)),))

    @staticmethod
    def build_standin(graph, spec) -> None:
        (_detector_standin if spec.role == "detector" else _recognizer_standin)(graph)

    def __init__(self, detector: str | Path, recognizer: str | Path, providers: list[str], *,
                 threads: int = 0, det_thresh: float = 0.5, precision: str = "fp32",
                 det_size: int = DET_SIZE[0], embed: bool = True):
        # lazy: insightface is slow to import, and only this path needs it
        from insightface.model_zoo.arcface_onnx import ArcFaceONNX

        # lazy: insightface is slow to import, and only this path needs it
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

    def analyze_frames(self, items: Iterable[tuple], first_frame: int = 1) -> Iterator[list[dict]]:
        """analyze_frame of every (working frame, embed) pair, in order (the detector on every frame:
        first_frame, the video's number of the first pair, does not matter here)."""
        for frame, embed in items:
            yield self.analyze_frame(frame, embed)

    def analyze_frame(self, frame, embed: bool = True) -> list[dict]:
        """analyze() of a working frame (facepipe.media.video.WorkFrame) without converting all of it:
        the detector gets the frame already at its input size, scaled from the YUV planes, and
        the recognizer's crops are warped from the planes."""
        h, w = frame.shape
        # Nothing to find in a flat frame (black, a fade, a dark shot): the detector is not run.
        if flat_picture(frame.luma()):
            return []
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


# ---- its stand-ins (facepipe.models.standin): SCRFD's and ArcFace's signatures, tiny graphs behind them

def _detector_outputs():
    # lazy: the stand-in builder, with onnx, is slow to import, and only this path needs it
    from facepipe.models.standin import TensorSig

    # SCRFD order: scores for strides 8/16/32, then bboxes, then keypoints.
    names = {"score": ("448", "471", "494"), "bbox": ("451", "474", "497"), "kps": ("454", "477", "500")}
    widths = {"score": 1, "bbox": 4, "kps": 10}
    return tuple(TensorSig(n, "float32", ("?", widths[kind])) for kind in ("score", "bbox", "kps") for n in names[kind])


# insightface.utils.face_align.arcface_dst: the 5-point template of a 112x112
# ArcFace crop (left eye, right eye, nose, left mouth, right mouth).
ARCFACE_DST = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


DET_BOX_FRACTION = 0.4  # face box side / smaller side of the detector input


DET_MAD_HALF = 0.02  # MAD at which the detector score is exactly 0.5
# Below this, a blob value is SCRFD's black padding ((0 - 127.5) / 128 = -0.996); 1 of 255 is -0.988.
DET_PADDING_ABOVE = -0.992


def _detector_standin(g) -> None:
    # lazy: onnx is needed only to build a stand-in, which a real run never does
    from onnx import TensorProto

    x = "input.1"
    # Face score from image "flatness", so empty frames give no detection; measured on every
    # 8th pixel, so that the stand-in costs next to nothing (benchmarks measure the overhead).
    sample = g.op("Slice", [x, g.const([0, 0], np.int64), g.const([2**31 - 1, 2**31 - 1], np.int64),
                            g.const([2, 3], np.int64), g.const([8, 8], np.int64)])
    # SCRFD pads the frame to the input size with black (the blob's -127.5/128) below and to the
    # right; counted, the padding's edge alone made a flat 16:9 frame a face (a grey frame scored
    # 0.85). Values at the padding's are left out, so a flat frame scores 0 at any aspect; the
    # frame's own pure black pixels are left out with them, which does not change a photo's score.
    kept = g.op("Cast", [g.op("Greater", [sample, g.const(DET_PADDING_ABOVE)])], to=TensorProto.FLOAT)
    count = g.op("Max", [g.op("ReduceSum", [kept], keepdims=0), g.const(1.0)])
    mean = g.op("Div", [g.op("ReduceSum", [g.op("Mul", [sample, kept])], keepdims=0), count])
    spread = g.op("Mul", [g.op("Abs", [g.op("Sub", [sample, mean])]), kept])
    mad = g.op("Div", [g.op("ReduceSum", [spread], keepdims=0), count])
    score = g.op("Div", [mad, g.op("Add", [mad, g.const(DET_MAD_HALF)])])

    shape = g.op("Shape", [x])
    h_i = g.op("Gather", [shape, g.const(2, np.int64)], axis=0)
    w_i = g.op("Gather", [shape, g.const(3, np.int64)], axis=0)
    h_f = g.op("Cast", [h_i], to=TensorProto.FLOAT)
    w_f = g.op("Cast", [w_i], to=TensorProto.FLOAT)
    half = g.const(0.5)
    cx = g.op("Mul", [w_f, half])
    cy = g.op("Mul", [h_f, half])
    side = g.op("Mul", [g.op("Min", [h_f, w_f]), g.const(DET_BOX_FRACTION)])
    half_side = g.op("Mul", [side, half])
    x0 = g.op("Sub", [cx, half_side])
    y0 = g.op("Sub", [cy, half_side])
    x1 = g.op("Add", [cx, half_side])
    y1 = g.op("Add", [cy, half_side])
    # Keypoints: the ArcFace template mapped onto the box, shape [1, 5].
    tmpl = ARCFACE_DST / 112.0
    kx = g.op("Add", [g.op("Mul", [g.const(tmpl[None, :, 0]), side]), x0])
    ky = g.op("Add", [g.op("Mul", [g.const(tmpl[None, :, 1]), side]), y0])

    ax1 = g.const([1], np.int64)
    ax2 = g.const([2], np.int64)
    zero_f = g.const(0.0)
    names = {8: ("448", "451", "454"), 16: ("471", "474", "477"), 32: ("494", "497", "500")}
    for stride, (score_name, bbox_name, kps_name) in names.items():
        s_i = g.const(stride, np.int64)
        inv_s = g.const(1.0 / stride)
        hs = g.op("Div", [h_i, s_i])
        ws = g.op("Div", [w_i, s_i])
        two = g.const(2, np.int64)
        n = g.op("Mul", [g.op("Mul", [hs, ws]), two])
        idx = g.op("Range", [g.const(0, np.int64), n, g.const(1, np.int64)])
        cell = g.op("Div", [idx, two])  # two anchors per location, same centre
        col = g.op("Mod", [cell, ws])
        row = g.op("Div", [cell, ws])
        s_f = g.const(float(stride))
        ax = g.op("Mul", [g.op("Cast", [col], to=TensorProto.FLOAT), s_f])
        ay = g.op("Mul", [g.op("Cast", [row], to=TensorProto.FLOAT), s_f])

        # Every anchor decodes to the same box; only one anchor gets a score.
        dists = [
            g.op("Mul", [g.op("Sub", [ax, x0]), inv_s]),
            g.op("Mul", [g.op("Sub", [ay, y0]), inv_s]),
            g.op("Mul", [g.op("Sub", [x1, ax]), inv_s]),
            g.op("Mul", [g.op("Sub", [y1, ay]), inv_s]),
        ]
        g.op("Concat", [g.op("Unsqueeze", [d, ax1]) for d in dists], bbox_name, axis=1)

        ax_col = g.op("Unsqueeze", [ax, ax1])
        ay_col = g.op("Unsqueeze", [ay, ax1])
        kdx = g.op("Unsqueeze", [g.op("Mul", [g.op("Sub", [kx, ax_col]), inv_s]), ax2])
        kdy = g.op("Unsqueeze", [g.op("Mul", [g.op("Sub", [ky, ay_col]), inv_s]), ax2])
        pairs = g.op("Concat", [kdx, kdy], axis=2)  # [N, 5, 2] -> x0,y0,x1,y1,...
        g.op("Reshape", [pairs, g.const([-1, 10], np.int64)], kps_name)

        if stride == 32:
            # The anchor nearest the centre on the coarsest level, as a real
            # SCRFD would fire for a large face.
            target = g.op(
                "Mul",
                [g.op("Add", [g.op("Mul", [g.op("Div", [hs, two]), ws]), g.op("Div", [ws, two])]), two],
            )
            onehot = g.op("Cast", [g.op("Equal", [idx, target])], to=TensorProto.FLOAT)
            scores = g.op("Mul", [onehot, score])
        else:
            scores = g.op("Mul", [g.op("Cast", [idx], to=TensorProto.FLOAT), zero_f])
        g.op("Unsqueeze", [scores, ax1], score_name)


def _recognizer_standin(g) -> None:
    # lazy: the stand-in builder, with onnx, is slow to import, and only this path needs it
    from facepipe.models.standin import SEED

    rng = np.random.default_rng(SEED + 1)
    pooled = g.op("AveragePool", ["input.1"], kernel_shape=[8, 8], strides=[8, 8])  # [N, 3, 14, 14]
    flat = g.op("Flatten", [pooled], axis=1)  # [N, 588]
    # Centring makes the embedding describe the crop's pattern, not its
    # overall brightness, so two different faces do not look alike.
    centred = g.op("Sub", [flat, g.op("ReduceMean", [flat], axes=[1], keepdims=1)])
    proj = (rng.standard_normal((588, 512)) / np.sqrt(588)).astype(np.float32)
    g.op("MatMul", [centred, g.const(proj)], "683")
