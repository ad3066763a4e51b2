"""Face swapping per segment with insightface's INSwapper (inswapper_128 and its FP16 variant)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from facepipe.faces import box_area, normalize, read_faces, row_face, write_faces
from facepipe.media import list_frames, read_image, write_png
from facepipe.runtime import create_session

log = logging.getLogger(__name__)

SWAPPED_TABLE = "faces_swapped.parquet"


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


def _pass_through(src: Path, dst: Path) -> None:
    # A frame without a face to swap is the same file: link it (no re-encode, no copy).
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


class Swapper:
    def __init__(self, model: str | Path, providers: list[str], *, precision: str = "fp32", threads: int = 0):
        from insightface.model_zoo.inswapper import INSwapper

        session = create_session(model, providers, precision=precision, threads=threads)
        self.model = INSwapper(model_file=str(model), session=session)

    def swap(self, img: np.ndarray, target_faces: list, source_embedding: np.ndarray) -> np.ndarray:
        from insightface.app.common import Face

        source = Face(embedding=source_embedding)
        for face in target_faces:
            img = self.model.get(img, face, source, paste_back=True)
        return img


def swap_segment(frames_dir: str | Path, faces: str | Path, source_embedding: np.ndarray, swapper: Swapper,
                 out_dir: str | Path, *, mode: str, reference: np.ndarray | None = None,
                 threshold: float = 0.35, metric: str = "cosine") -> pd.DataFrame:
    """Swap the selected faces in every frame; frames without one pass through unchanged."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = read_faces(faces)
    by_frame = {k: g for k, g in table.groupby("frame")} if len(table) else {}
    swapped = []
    for path in list_frames(frames_dir):
        chosen = select_faces(by_frame.get(int(path.stem), table.iloc[0:0]), mode, reference, threshold, metric)
        if chosen.empty:
            _pass_through(path, out_dir / path.name)
            continue
        img = swapper.swap(read_image(path, "frame"), [row_face(r) for r in chosen.itertuples()], source_embedding)
        write_png(out_dir / path.name, img)
        swapped.append(chosen)
    result = pd.concat(swapped, ignore_index=True) if swapped else table.iloc[0:0]
    write_faces(result, out_dir / SWAPPED_TABLE)
    log.info("swapped %d faces in %d of %d frames (mode %s)", len(result),
             result["frame"].nunique() if len(result) else 0, len(list_frames(frames_dir)), mode)
    return result
