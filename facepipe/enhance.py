"""Face enhancement with GFPGAN 1.4 (ONNX), applied to the faces the swap replaced.

The module is imported, and the model loaded, only by the enhancement rule, which is in the
DAG only when an enhancer is chosen.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from facepipe.patches import FramePatches, Patch, apply_patches, write_patches
from facepipe.runtime import BatchedSession, create_session
from facepipe.video import WorkFrame

log = logging.getLogger(__name__)

# Five-point FFHQ alignment template at unit scale (the one FaceFusion uses for GFPGAN).
FFHQ_TEMPLATE = np.array(
    [[0.37691676, 0.46864664], [0.62285697, 0.46912813], [0.50123859, 0.61331904],
     [0.39308822, 0.72541100], [0.61150205, 0.72490465]], dtype=np.float32)
# How much of the enhanced face is blended over the swapped one.
BLEND = 0.8


class GFPGAN:
    """GFPGAN 1.4 on batches of FFHQ-aligned face crops (runtime.BatchedSession)."""

    def __init__(self, model: str | Path, providers: list[str], *, threads: int = 0, precision: str = "fp32",
                 batch_size: int = 1):
        self.session = create_session(model, providers, threads=threads, precision=precision)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.size = int(inp.shape[-1]) if isinstance(inp.shape[-1], int) else 512
        self.runner = BatchedSession(self.session, batch_size, name=str(model))

    @property
    def batch_size(self) -> int:
        return self.runner.size

    def crop(self, img: np.ndarray, kps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The FFHQ-aligned crop of a face and its frame -> crop matrix."""
        matrix, _ = cv2.estimateAffinePartial2D(kps.reshape(5, 2), FFHQ_TEMPLATE * self.size, method=cv2.LMEDS)
        crop = cv2.warpAffine(img, matrix, (self.size, self.size), borderMode=cv2.BORDER_REPLICATE,
                              flags=cv2.INTER_AREA)
        return crop, matrix

    def enhance(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """Enhanced crops, already blended with the crops they replace."""
        out = []
        for chunk, call in self.runner.batches(crops):
            blob = ((np.stack(call)[..., ::-1].astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(0, 3, 1, 2)
            pred = self.runner.run({self.input_name: np.ascontiguousarray(blob)})[0][:len(chunk)]
            pred = (np.clip(pred, -1, 1) + 1) / 2
            enhanced = (pred.transpose(0, 2, 3, 1)[..., ::-1] * 255.0).round().clip(0, 255).astype(np.uint8)
            out.extend(cv2.addWeighted(crop, 1 - BLEND, face, BLEND, 0) for crop, face in zip(chunk, enhanced))
        return out


def enhance_segment(frames: Iterable[WorkFrame], swap_patches: str | Path, enhancer: GFPGAN,
                    out: str | Path) -> int:
    """Enhance the swapped faces of a segment; writes the swap patches followed, frame by frame,
    by the enhancer's (applied in that order they give the enhanced frame).

    Every face is cropped from its swapped frame, so the faces of several frames go through
    the enhancer together, ``enhancer.batch_size`` at a time.
    """
    by_frame = FramePatches(swap_patches)
    count = 0

    def enhanced(pending: list[list[Patch]], crops: list[tuple[np.ndarray, np.ndarray]]):
        faces = iter(zip(enhancer.enhance([crop for crop, _ in crops]), (m for _, m in crops)))
        for swapped in pending:
            patches = list(swapped)
            for face in swapped:
                image, matrix = next(faces)
                patches.append(Patch(kind="ffhq", image=image, matrix=matrix, frame=face.frame, face=face.face,
                                     kps=face.kps))
            yield patches

    def frames_of_patches():
        nonlocal count
        pending, crops = [], []
        for frame in frames:
            swapped = by_frame.get(frame.number)
            if not swapped:
                continue
            img = frame.bgr().copy()
            apply_patches(img, swapped)
            pending.append(swapped)
            crops.extend(enhancer.crop(img, face.kps) for face in swapped)
            if len(crops) >= enhancer.batch_size:
                yield from enhanced(pending, crops)
                count += len(crops)
                pending, crops = [], []
        yield from enhanced(pending, crops)
        count += len(crops)

    write_patches(frames_of_patches(), out)
    log.info("enhanced %d faces", count)
    return count


def pass_through_segment(swap_patches: str | Path, out: str | Path) -> None:
    """The swap patches unchanged (the enhancer was dropped to save GPU memory), verified
    first and sealed as the stage's own output."""
    import shutil

    from facepipe.integrity import place_sealed, verify

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.copyfile(verify(swap_patches), tmp)
    place_sealed(tmp, out)
