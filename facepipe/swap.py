"""Face swapping per segment with insightface's INSwapper (inswapper_128 and its FP16 variant)."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from facepipe.faces import box_area, normalize, read_faces
from facepipe.patches import Patch, decode_png, paste_inswapper, write_patches
from facepipe.runtime import create_session

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

    def patch_from_crop(self, crop: np.ndarray, matrix: np.ndarray, source_embedding: np.ndarray, **_) -> Patch:
        """The swapped face from its aligned 128 px crop, as INSwapper.get computes it."""
        model = self.model
        latent = self._latent(source_embedding)
        blob = cv2.dnn.blobFromImage(crop, 1.0 / model.input_std, model.input_size,
                                     (model.input_mean,) * 3, swapRB=True)
        pred = model.session.run(model.output_names, {model.input_names[0]: blob, model.input_names[1]: latent})[0]
        fake = np.clip(255 * pred.transpose((0, 2, 3, 1))[0], 0, 255).astype(np.uint8)[:, :, ::-1]
        return Patch(kind="inswapper", image=np.ascontiguousarray(fake), matrix=np.asarray(matrix).reshape(2, 3))

    def _latent(self, source_embedding: np.ndarray) -> np.ndarray:
        key = np.asarray(source_embedding, np.float32).tobytes()
        if getattr(self, "_latent_key", None) != key:
            latent = normalize(source_embedding).reshape((1, -1))
            latent = np.dot(latent, self.model.emap)
            self._latent_value = (latent / np.linalg.norm(latent)).astype(np.float32)
            self._latent_key = key
        return self._latent_value


def paste_back(img: np.ndarray, fake: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """insightface's paste-back, on the face's surroundings only (see patches.paste_inswapper)."""
    out = img.copy()
    paste_inswapper(out, fake, matrix)
    return out


def swap_segment(faces: str | Path, source_embedding: np.ndarray, swapper, out: str | Path, *, mode: str,
                 reference: np.ndarray | None = None, threshold: float = 0.35, metric: str = "cosine") -> int:
    """Swap the selected faces of a segment from the crops detection kept (no frame is decoded);
    writes the face patches, in face order within each frame."""
    table = read_faces(faces)
    patches, frames = [], 0
    for frame_no, frame_faces in (table.groupby("frame", sort=True) if len(table) else []):
        chosen = select_faces(frame_faces, mode, reference, threshold, metric)
        if chosen.empty:
            continue
        frames += 1
        for row in chosen.sort_values("face").itertuples():
            if row.crop is None:
                raise ValueError(f"{faces}: face {row.face} of frame {frame_no} has no crop; rerun detection")
            patch = swapper.patch_from_crop(decode_png(row.crop), matrix=row.crop_matrix,
                                            source_embedding=source_embedding, x=int(row.crop_x),
                                            y=int(row.crop_y), landmarks=row.landmarks)
            # A swapper may make no patch for a face (the classic one, for a face too small to swap).
            if patch is None:
                continue
            patch.frame, patch.face = int(frame_no), int(row.face)
            patch.kps = np.asarray(row.kps, dtype=np.float32).reshape(5, 2)
            patches.append(patch)
    write_patches(patches, out)
    log.info("swapped %d faces in %d frames (mode %s; %d frames with faces)", len(patches), frames, mode,
             table["frame"].nunique() if len(table) else 0)
    return len(patches)
