"""How a recognizer's identity embeddings compare: one ``Metric`` per embedding space, named on
each backend of the registry (``Backend.metric``). Tracking, person selection and QC ask the
metric for distances, mean identities and same-person thresholds instead of switching on its name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Metric:
    name: str
    # Compared as unit vectors (cosine distance) rather than as they are (Euclidean).
    unit: bool
    # Tracking refuses to link a detection whose identity is this far from the track's latest.
    link_distance: float
    # Tracks whose mean identities are under this distance are one person.
    person_distance: float

    def _prepared(self, m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, np.float64)
        return m / (np.linalg.norm(m, axis=-1, keepdims=True) + 1e-12) if self.unit else m

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """The identity distance between two embeddings."""
        a, b = self._prepared(np.reshape(a, -1)), self._prepared(np.reshape(b, -1))
        return float(1.0 - a @ b) if self.unit else float(np.linalg.norm(a - b))

    def distances(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """distance() between every row of a and every row of b."""
        a, b = self._prepared(a), self._prepared(b)
        if self.unit:
            return 1.0 - a @ b.T
        return np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2)

    def identity(self, embeddings: list[np.ndarray]) -> np.ndarray | None:
        """One identity from several samples: their mean (of unit vectors, for cosine)."""
        if not embeddings:
            return None
        return self._prepared(np.stack([np.reshape(e, -1) for e in embeddings])).mean(axis=0)

    def __str__(self) -> str:
        return self.name


# ArcFace's cosine distance: one person over a video is typically 0.2-0.5 apart, two people 0.8-1.0.
COSINE = Metric("cosine", unit=True, link_distance=0.7, person_distance=0.5)
# dlib's Euclidean distance: 0.6 is dlib's own cut-off; persons are split stricter, as for references.
EUCLIDEAN = Metric("euclidean", unit=False, link_distance=0.65, person_distance=0.5)
METRICS = {m.name: m for m in (COSINE, EUCLIDEAN)}


def metric(named: Metric | str) -> Metric:
    """The metric itself, given it or its name."""
    if isinstance(named, Metric):
        return named
    try:
        return METRICS[named]
    except KeyError:
        raise ValueError(f"unknown embedding metric {named!r}; expected one of {sorted(METRICS)}") from None
