"""insightface's inswapper (the 128 px swapper, and its FP16 copy)."""

from __future__ import annotations

import numpy as np

from facepipe.models.swapper import AlignedSwapper, swapper_standin


class InSwapper(AlignedSwapper):
    """The source input is the unit ArcFace embedding through the model's own ``emap`` (the
    graph's last initializer, as insightface's INSwapper reads it), made unit again."""

    def __init__(self, spec, model, providers, **kwargs):
        super().__init__(spec, model, providers, **kwargs)
        # lazy: onnx is slow to import, and only this path needs it
        import onnx

        # lazy: onnx is slow to import, and only this path needs it
        from onnx import numpy_helper

        self.emap = numpy_helper.to_array(onnx.load(self.model).graph.initializer[-1]).astype(np.float32)
        if self.emap.ndim != 2 or self.emap.shape[0] != self.emap.shape[1]:
            raise ValueError(f"{self.model}: its last initializer {self.emap.shape} is not inswapper's emap")

    @staticmethod
    def standin_signature(spec):
        """FaceFusion binds the inputs by name ("target", "source") and reads the first output."""
        # lazy: the stand-in builder, with onnx, is slow to import, and only this path needs it
        from facepipe.models.standin import ModelSignature, TensorSig, image_signature

        return ModelSignature((image_signature("target", spec.size), TensorSig("source", "float32", (1, 512))),
                              (image_signature("output", spec.size),))

    @staticmethod
    def build_standin(graph, spec) -> None:
        swapper_standin(graph, spec, emap=True)

    def prepare_source(self, record: dict) -> np.ndarray:
        embedding = np.asarray(record["embedding"], np.float32).reshape(1, -1)
        latent = (embedding / np.linalg.norm(embedding)) @ self.emap
        return (latent / np.linalg.norm(latent)).astype(np.float32)
