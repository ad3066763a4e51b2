"""FaceFusion's HyperSwap (hyperswap_1a/1b/1c_256)."""

from __future__ import annotations

import numpy as np

from facepipe.models.swapper import AlignedSwapper


class HyperSwap(AlignedSwapper):
    """The source input is the unit ArcFace embedding (FaceFusion's prepare_source_embedding)."""

    def prepare_source(self, record: dict) -> np.ndarray:
        embedding = np.asarray(record["embedding"], np.float32).reshape(1, -1)
        return (embedding / np.linalg.norm(embedding)).astype(np.float32)
