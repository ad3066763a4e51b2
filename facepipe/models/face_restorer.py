"""Face restorers used as enhancers: GFPGAN, CodeFormer, GPEN-BFR, RestoreFormer++.

They share one contract (FaceFusion's face_enhancer): a crop aligned to the model's template
at its size, RGB scaled to [-1, 1], in an input named "input" (CodeFormer also takes its
fidelity "weight"); the restored crop, in [-1, 1], is the first output. The restored face is
blended over the crop it came from (``blend``: 1 = all restored).
"""

from __future__ import annotations

import cv2
import numpy as np

from facepipe.models.alignment import alignment_matrix
from facepipe.models.registry import ModelSpec
from facepipe.models.runtime import BatchedSession, create_session, normalized

_HALF = np.full(3, 0.5, np.float32)  # GFPGAN's and CodeFormer's input: pixel / 255 * 2 - 1

# CodeFormer's fidelity weight (0: most restoration, 1: most faithful to the input): FaceFusion's default.
CODEFORMER_WEIGHT = 0.5


class FaceRestorer:
    @staticmethod
    def standin_signature(spec):
        """Bound as "input" (CodeFormer also "weight", a double); the first output is read."""
        # lazy: the stand-in builder, with onnx, is slow to import, and only this path needs it
        from facepipe.models.standin import ModelSignature, TensorSig, image_signature

        return ModelSignature((image_signature("input", spec.size),
                               *(TensorSig(n, "float64", (1,)) for n in spec.extra_inputs)),
                              (image_signature("output", spec.size),))

    @staticmethod
    def build_standin(graph, spec) -> None:
        _restorer_standin(graph, spec)

    def __init__(self, spec: ModelSpec, model, providers: list[str], *, threads: int = 0, precision: str = "fp32",
                 batch_size: int = 1, blend: float = 0.8, io_binding: bool | None = None):
        self.spec = spec
        self.size = spec.size
        self.blend = float(blend)
        self.session = create_session(model, providers, threads=threads, precision=precision)
        inputs = {i.name: i for i in self.session.get_inputs()}
        if "input" not in inputs:
            raise ValueError(f"{model}: inputs {sorted(inputs)}, but a face restorer takes 'input'")
        shape = inputs["input"].shape
        if isinstance(shape[-1], int) and shape[-1] != self.size:
            raise ValueError(f"{model} takes {shape[-1]} px crops, its registry entry says {self.size}")
        # A double, one value, as FaceFusion feeds it.
        self.constants = {"weight": np.array([CODEFORMER_WEIGHT], np.float64)} if "weight" in inputs else {}
        self.runner = BatchedSession(self.session, batch_size, name=str(model), io_binding=io_binding)

    @property
    def batch_size(self) -> int:
        return self.runner.size

    def crop(self, img: np.ndarray, kps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The face's crop aligned to the model's template, and its frame -> crop matrix."""
        matrix = alignment_matrix(kps, self.spec.template, self.size)
        crop = cv2.warpAffine(img, matrix, (self.size, self.size), borderMode=cv2.BORDER_REPLICATE,
                              flags=cv2.INTER_AREA)
        return crop, matrix

    def enhance(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """Restored crops, already blended with the crops they replace."""
        out = []
        for chunk, call in self.runner.batches(crops):
            blob = normalized(np.stack(call)[..., ::-1], _HALF, _HALF).transpose(0, 3, 1, 2)
            pred = self.runner.run({"input": np.ascontiguousarray(blob)}, self.constants)[0][:len(chunk)]
            pred = (np.clip(pred, -1, 1) + 1) / 2
            restored = (pred.transpose(0, 2, 3, 1)[..., ::-1] * 255.0).round().clip(0, 255).astype(np.uint8)
            out.extend(cv2.addWeighted(crop, 1 - self.blend, face, self.blend, 0)
                       for crop, face in zip(chunk, restored))
        return out


def _restorer_standin(g, spec) -> None:
    """A gentle 3x3 sharpen, clipped to [-1, 1] (facepipe.models.standin)."""
    # lazy: onnx is needed only to build a stand-in, which a real run never does
    from onnx import TensorProto

    a = 0.15
    k = np.array([[0, -a, 0], [-a, 1 + 4 * a, -a], [0, -a, 0]], dtype=np.float32)
    weight = np.repeat(k[None, None], 3, axis=0)  # depthwise: [3, 1, 3, 3]
    sharp = g.op("Conv", ["input", g.const(weight)], group=3, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    for name in spec.extra_inputs:
        # A fidelity weight (CodeFormer's): 1 keeps the input, 0 sharpens fully.
        w = g.op("Cast", [name], to=TensorProto.FLOAT)
        sharp = g.op("Add", [sharp, g.op("Mul", [g.op("Sub", ["input", sharp]), w])])
    g.op("Clip", [sharp, g.const(-1.0), g.const(1.0)], "output")
