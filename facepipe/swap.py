"""Face swapping per segment with insightface's INSwapper (inswapper_128 and its FP16 variant)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import cv2
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
            fake, matrix = self.model.get(img, face, source, paste_back=False)
            img = paste_back(img, fake, matrix)
        return img


def paste_back(img: np.ndarray, fake: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Blend a swapped aligned crop back into the frame, working only around the face.

    The mask is insightface's own (INSwapper.get with paste_back=True: the warped crop square,
    eroded by a tenth of its size and feathered by a twentieth), but insightface warps and blurs
    full-frame images for every face, which costs ~0.3 s per 1080p frame; here the same
    operations run on the face's bounding box plus the feathering margin, with the same result.
    """
    h, w = img.shape[:2]
    size = fake.shape[0]
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float32) @ inverse.T
    # Feathering margin from the unclipped square: an upper bound of what the mask needs.
    margin = 2 * max(int(np.sqrt(np.ptp(corners[:, 0]) * np.ptp(corners[:, 1]))) // 20, 5) + 4
    x0 = max(int(np.floor(corners[:, 0].min())) - margin, 0)
    y0 = max(int(np.floor(corners[:, 1].min())) - margin, 0)
    x1 = min(int(np.ceil(corners[:, 0].max())) + margin, w)
    y1 = min(int(np.ceil(corners[:, 1].max())) + margin, h)
    if x1 <= x0 or y1 <= y0:
        return img
    shifted = inverse.copy()
    shifted[:, 2] -= (x0, y0)
    roi_size = (x1 - x0, y1 - y0)
    fake_roi = cv2.warpAffine(fake, shifted, roi_size, borderValue=0.0)
    white = cv2.warpAffine(np.full((size, size), 255, np.float32), shifted, roi_size, borderValue=0.0)
    white[white > 20] = 255
    ys, xs = np.nonzero(white == 255)
    if ys.size == 0:
        return img
    # Mask extent measured as insightface does: on the visible part of the warped square.
    mask_size = int(np.sqrt(np.ptp(ys) * np.ptp(xs)))
    erode = max(mask_size // 10, 10)
    blur = max(mask_size // 20, 5)
    mask = cv2.erode(white, np.ones((erode, erode), np.uint8), iterations=1)
    mask = cv2.GaussianBlur(mask, (2 * blur + 1, 2 * blur + 1), 0)[:, :, None] / 255.0
    out = img.copy()
    roi = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = (mask * fake_roi + (1 - mask) * roi).astype(np.uint8)
    return out


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
