"""FaceFusion's HyperSwap (hyperswap_1a/1b/1c_256)."""

from __future__ import annotations

import numpy as np

from facepipe.models.swapper import AlignedSwapper, swapper_standin


class HyperSwap(AlignedSwapper):
    """The source input is the unit ArcFace embedding (FaceFusion's prepare_source_embedding)."""

    @staticmethod
    def standin_signature(spec):
        """Its second output (a face mask) is as third-party loaders describe it; nothing reads it."""
        # lazy: the stand-in builder, with onnx, is slow to import, and only this path needs it
        from facepipe.models.standin import ModelSignature, TensorSig, image_signature

        return ModelSignature((TensorSig("source", "float32", (1, 512)), image_signature("target", spec.size)),
                              (image_signature("output", spec.size),
                               TensorSig("mask", "float32", (1, 1, spec.size, spec.size))))

    @staticmethod
    def build_standin(graph, spec) -> None:
        swapper_standin(graph, spec, mask_output=True)

    def prepare_source(self, record: dict) -> np.ndarray:
        embedding = np.asarray(record["embedding"], np.float32).reshape(1, -1)
        return (embedding / np.linalg.norm(embedding)).astype(np.float32)
