"""Face swapping per segment with insightface's INSwapper (inswapper_128 and its FP16 variant)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from facepipe.faces import box_area, normalize, read_faces, row_face
from facepipe.patches import Patch, apply_patch, apply_patches, paste_inswapper, write_patches
from facepipe.runtime import create_session
from facepipe.video import WorkFrame

log = logging.getLogger(__name__)

def select_faces(frame_faces: pd.DataFrame, mode: str, reference: np.ndarray | None = None,
                 threshold: float = 0.35, metric: str = "cosine") -> pd.DataFrame:
    """The faces of one frame to replace: the most prominent, all, or those like the reference.

    ``metric`` is how the backend's embeddings are compared: "cosine" (ArcFace) or
    "euclidean" (dlib, offline backend); ``threshold`` is in that metric.
    """
    if frame_faces.empty:
        return frame_faces
    if mode == "many":
        return frame_faces
    if mode == "one":
        areas = frame_faces.apply(lambda r: box_area((r.x1, r.y1, r.x2, r.y2)), axis=1)
        return frame_faces.loc[[areas.idxmax()]]
    if mode == "reference":
        if reference is None:
            raise ValueError("faces=reference needs a reference embedding")
        if frame_faces["embedding"].isna().any():
            raise ValueError("faces=reference needs the target faces' embeddings, and this faces table has none "
                             "(made by the offline backend for faces=one|many); rerun detection")
        if metric == "euclidean":
            ref = np.asarray(reference, dtype=np.float32).reshape(-1)
            dist = frame_faces["embedding"].apply(
                lambda e: float(np.linalg.norm(np.asarray(e, dtype=np.float32) - ref)))
        elif metric == "cosine":
            ref = normalize(reference)
            dist = frame_faces["embedding"].apply(lambda e: 1.0 - float(normalize(e) @ ref))
        else:
            raise ValueError(f"unknown embedding metric {metric!r}; expected cosine or euclidean")
        return frame_faces[dist < threshold]
    raise ValueError(f"unknown faces mode {mode!r}")


class Swapper:
    def __init__(self, model: str | Path, providers: list[str], *, precision: str = "fp32", threads: int = 0):
        from insightface.model_zoo.inswapper import INSwapper

        session = create_session(model, providers, precision=precision, threads=threads)
        self.model = INSwapper(model_file=str(model), session=session)

    def patches(self, img: np.ndarray, target_faces: list, source_embedding: np.ndarray) -> list[Patch]:
        """One patch per face; each face is swapped on the frame with the earlier patches applied."""
        from insightface.app.common import Face

        source = Face(embedding=source_embedding)
        img = img.copy()
        out = []
        for face in target_faces:
            fake, matrix = self.model.get(img, face, source, paste_back=False)
            patch = Patch(kind="inswapper", image=fake, matrix=matrix)
            apply_patch(img, patch)
            out.append(patch)
        return out

    def swap(self, img: np.ndarray, target_faces: list, source_embedding: np.ndarray) -> np.ndarray:
        out = img.copy()
        apply_patches(out, self.patches(img, target_faces, source_embedding))
        return out


def paste_back(img: np.ndarray, fake: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """insightface's paste-back, on the face's surroundings only (see patches.paste_inswapper)."""
    out = img.copy()
    paste_inswapper(out, fake, matrix)
    return out


def swap_segment(frames: Iterable[WorkFrame], faces: str | Path, source_embedding: np.ndarray, swapper,
                 out: str | Path, *, mode: str, reference: np.ndarray | None = None,
                 threshold: float = 0.35, metric: str = "cosine") -> int:
    """Swap the selected faces of every frame; writes the face patches (frames without one have none)."""
    table = read_faces(faces)
    by_frame = {k: g for k, g in table.groupby("frame")} if len(table) else {}
    patches, frames_swapped, total = [], 0, 0
    for frame in frames:
        total += 1
        chosen = select_faces(by_frame.get(frame.number, table.iloc[0:0]), mode, reference, threshold, metric)
        if chosen.empty:
            continue
        made = swapper.patches(frame.bgr(), [row_face(r) for r in chosen.itertuples()], source_embedding)
        # A swapper may make no patch for a face (the classic one, for a face too small to swap).
        for row, patch in zip(chosen.itertuples(), made):
            if patch is None:
                continue
            patch.frame, patch.face = frame.number, int(row.face)
            patch.kps = np.asarray(row.kps, dtype=np.float32).reshape(5, 2)
            patches.append(patch)
        frames_swapped += 1
    write_patches(patches, out)
    log.info("swapped %d faces in %d of %d frames (mode %s)", len(patches), frames_swapped, total, mode)
    return len(patches)
