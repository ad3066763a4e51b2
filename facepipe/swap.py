"""Face swapping per segment with insightface's INSwapper (inswapper_128 and its FP16 variant)."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from facepipe.faces import normalize, row_crop
from facepipe.integrity import reject
from facepipe.patches import Patch, paste_inswapper, write_patches
from facepipe.runtime import BatchedSession, create_session

log = logging.getLogger(__name__)

def select_faces(faces: pd.DataFrame, mode: str, reference: np.ndarray | None = None,
                 threshold: float = 0.35, metric: str = "cosine") -> pd.DataFrame:
    """The faces to replace, frame by frame: each frame's most prominent, all, or those like the
    reference. Works on a whole faces table at once.

    ``metric`` is how the backend's embeddings are compared: "cosine" (ArcFace) or
    "euclidean" (dlib, offline backend); ``threshold`` is in that metric.
    """
    if faces.empty or mode == "many":
        return faces
    if mode == "one":
        area = (faces["x2"] - faces["x1"]).clip(lower=0) * (faces["y2"] - faces["y1"]).clip(lower=0)
        return faces.loc[area.groupby(faces["frame"]).idxmax()]
    if mode == "reference":
        if reference is None:
            raise ValueError("faces=reference needs a reference embedding")
        if faces["embedding"].isna().any():
            raise ValueError("faces=reference needs the target faces' embeddings, and this faces table has none "
                             "(made by the offline backend for faces=one|many); rerun detection")
        embeddings = np.stack([np.asarray(e, dtype=np.float32) for e in faces["embedding"]])
        if metric == "euclidean":
            dist = np.linalg.norm(embeddings - np.asarray(reference, dtype=np.float32).reshape(-1), axis=1)
        elif metric == "cosine":
            unit = embeddings / (np.linalg.norm(embeddings, axis=1, keepdims=True) + 1e-12)
            dist = 1.0 - unit @ normalize(reference)
        else:
            raise ValueError(f"unknown embedding metric {metric!r}; expected cosine or euclidean")
        return faces[dist < threshold]
    raise ValueError(f"unknown faces mode {mode!r}")


class Swapper:
    """insightface's INSwapper, on batches of face crops (runtime.BatchedSession): the published
    inswapper_128 takes one face per call, its batched copy (facepipe.batching) ``batch_size``.
    On a GPU the source latents, the same for every batch of the job, are copied there once.
    """

    def __init__(self, model: str | Path, providers: list[str], *, precision: str = "fp32", threads: int = 0,
                 io_binding: bool | None = None, batch_size: int = 1):
        from insightface.model_zoo.inswapper import INSwapper

        session = create_session(model, providers, precision=precision, threads=threads)
        self.model = INSwapper(model_file=str(model), session=session)
        self.runner = BatchedSession(session, batch_size, name=str(model), io_binding=io_binding)

    @property
    def batch_size(self) -> int:
        return self.runner.size

    def patch_from_crop(self, crop: np.ndarray, matrix: np.ndarray, source_embedding: np.ndarray, **_) -> Patch:
        """The swapped face from its aligned 128 px crop, as INSwapper.get computes it."""
        return self.patches_from_crops([crop], [matrix], source_embedding)[0]

    def patches_from_crops(self, crops: list[np.ndarray], matrices: list[np.ndarray],
                           source_embedding: np.ndarray) -> list[Patch]:
        """Swapped faces for many aligned 128 px crops, ``batch_size`` per model call."""
        model = self.model
        latent = self._latent(source_embedding)
        fakes = []
        for chunk, call in self.runner.batches(crops):
            blob = cv2.dnn.blobFromImages(call, 1.0 / model.input_std, model.input_size, (model.input_mean,) * 3,
                                          swapRB=True)
            latents = {model.input_names[1]: np.repeat(latent, len(call), axis=0)}
            pred = self.runner.run({model.input_names[0]: blob}, latents)[0][:len(chunk)]
            fakes.extend(np.clip(255 * pred.transpose((0, 2, 3, 1)), 0, 255).astype(np.uint8))
        return [Patch(kind="inswapper", image=np.ascontiguousarray(fake[:, :, ::-1]),
                      matrix=np.asarray(matrix).reshape(2, 3)) for fake, matrix in zip(fakes, matrices)]

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
    writes the face patches, in face order within each frame. The faces table is verified
    before its first row is used (facepipe.tables.iter_frame_rows)."""
    from itertools import groupby

    from facepipe.tables import iter_frame_rows

    counts = {"frames": 0, "with_faces": 0}

    def swapped(rows: list) -> list[Patch | None]:
        crops = []
        for row in rows:
            try:
                crops.append(row_crop(row))
            except (ValueError, TypeError) as exc:
                # The table passed its seal, so it was written like this: removed all the same,
                # so that the next run detects again, and named, never swapped as garbage.
                reject(faces, f"face {row.face} of frame {row.frame} is not usable: {exc}")
        if hasattr(swapper, "patches_from_crops"):
            patches = swapper.patches_from_crops(crops, [row.crop_matrix for row in rows], source_embedding)
        else:
            patches = [swapper.patch_from_crop(crop, matrix=row.crop_matrix, source_embedding=source_embedding,
                                               x=int(row.crop_x), y=int(row.crop_y), landmarks=row.landmarks)
                       for crop, row in zip(crops, rows)]
        for patch, row in zip(patches, rows):
            # A swapper may make no patch for a face (the classic one, for a face too small to swap).
            if patch is not None:
                patch.frame, patch.face = int(row.frame), int(row.face)
                patch.kps = np.asarray(row.kps, dtype=np.float32).reshape(5, 2)
        return patches

    def frames_of_patches():
        # A row group of whole frames at a time: "one" compares a frame's faces with each other.
        # The faces of consecutive frames go through the swapper together, a batch at a time.
        step = getattr(swapper, "batch_size", 1)
        for table in iter_frame_rows(faces):
            counts["with_faces"] += table["frame"].nunique()
            chosen = select_faces(table, mode, reference, threshold, metric).sort_values(["frame", "face"])
            pending: list[list] = []
            for _, rows in groupby(chosen.itertuples(), key=lambda row: row.frame):
                pending.append(list(rows))
                if sum(map(len, pending)) >= step:
                    yield from by_frame(pending)
                    pending = []
            yield from by_frame(pending)

    def by_frame(frames: list[list]):
        patches = iter(swapped([row for rows in frames for row in rows]))
        for rows in frames:
            counts["frames"] += 1
            yield [patch for patch in (next(patches) for _ in rows) if patch is not None]

    count = write_patches(frames_of_patches(), out)
    log.info("swapped %d faces in %d frames (mode %s; %d frames with faces)", count, counts["frames"], mode,
             counts["with_faces"])
    return count
