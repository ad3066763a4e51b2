"""Face enhancement with GFPGAN 1.4 (ONNX), applied to the faces the swap replaced.

The module is imported, and the model loaded, only by the enhancement rule, which is in the
DAG only when an enhancer is chosen.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from facepipe.faces import read_faces
from facepipe.media import list_frames, read_image, write_png
from facepipe.runtime import create_session
from facepipe.swap import SWAPPED_TABLE, _pass_through

log = logging.getLogger(__name__)

# Five-point FFHQ alignment template at unit scale (the one FaceFusion uses for GFPGAN).
FFHQ_TEMPLATE = np.array(
    [[0.37691676, 0.46864664], [0.62285697, 0.46912813], [0.50123859, 0.61331904],
     [0.39308822, 0.72541100], [0.61150205, 0.72490465]], dtype=np.float32)
# How much of the enhanced face is blended over the swapped one.
BLEND = 0.8


def _box_mask(size: int, blur: float = 0.3, padding: float = 0.05) -> np.ndarray:
    """A feathered rectangle so the pasted face has no visible seam."""
    blur_amount = int(size * 0.5 * blur)
    blur_area = max(blur_amount // 2, 1)
    pad = max(int(size * padding), blur_area)
    mask = np.ones((size, size), np.float32)
    mask[:pad, :] = 0
    mask[-pad:, :] = 0
    mask[:, :pad] = 0
    mask[:, -pad:] = 0
    if blur_amount > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), blur_amount * 0.25)
    return mask


class GFPGAN:
    def __init__(self, model: str | Path, providers: list[str], *, threads: int = 0, precision: str = "fp32"):
        self.session = create_session(model, providers, threads=threads, precision=precision)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.size = int(inp.shape[-1]) if isinstance(inp.shape[-1], int) else 512
        self.mask = _box_mask(self.size)

    def enhance_face(self, img: np.ndarray, kps: np.ndarray) -> np.ndarray:
        matrix, _ = cv2.estimateAffinePartial2D(kps.reshape(5, 2), FFHQ_TEMPLATE * self.size, method=cv2.LMEDS)
        crop = cv2.warpAffine(img, matrix, (self.size, self.size), borderMode=cv2.BORDER_REPLICATE,
                              flags=cv2.INTER_AREA)
        blob = crop[:, :, ::-1].astype(np.float32) / 255.0
        blob = ((blob - 0.5) / 0.5).transpose(2, 0, 1)[None]
        out = self.session.run(None, {self.input_name: blob})[0][0]
        out = (np.clip(out, -1, 1) + 1) / 2
        enhanced = (out.transpose(1, 2, 0)[:, :, ::-1] * 255.0).round().clip(0, 255).astype(np.uint8)
        enhanced = cv2.addWeighted(crop, 1 - BLEND, enhanced, BLEND, 0)
        inverse = cv2.invertAffineTransform(matrix)
        h, w = img.shape[:2]
        mask = cv2.warpAffine(self.mask, inverse, (w, h)).clip(0, 1)[:, :, None]
        pasted = cv2.warpAffine(enhanced, inverse, (w, h), borderMode=cv2.BORDER_REPLICATE)
        return (mask * pasted + (1 - mask) * img).round().astype(np.uint8)


def enhance_segment(frames_dir: str | Path, enhancer: GFPGAN, out_dir: str | Path) -> int:
    """Enhance the swapped faces of a segment; other frames pass through unchanged."""
    frames_dir, out_dir = Path(frames_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = read_faces(frames_dir / SWAPPED_TABLE)
    by_frame = {k: g for k, g in table.groupby("frame")} if len(table) else {}
    count = 0
    for path in list_frames(frames_dir):
        faces = by_frame.get(int(path.stem))
        if faces is None:
            _pass_through(path, out_dir / path.name)
            continue
        img = read_image(path, "frame")
        for row in faces.itertuples():
            img = enhancer.enhance_face(img, np.asarray(row.kps, dtype=np.float32))
            count += 1
        write_png(out_dir / path.name, img)
    _pass_through(frames_dir / SWAPPED_TABLE, out_dir / SWAPPED_TABLE)
    log.info("enhanced %d faces", count)
    return count


def pass_through_segment(frames_dir: str | Path, out_dir: str | Path) -> None:
    """The swapped frames unchanged (the enhancer was dropped to save GPU memory)."""
    frames_dir, out_dir = Path(frames_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in [*list_frames(frames_dir), frames_dir / SWAPPED_TABLE]:
        _pass_through(path, out_dir / path.name)
