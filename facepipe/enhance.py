"""Face enhancement with GFPGAN 1.4 (ONNX), applied to the faces the swap replaced.

The module is imported, and the model loaded, only by the enhancement rule, which is in the
DAG only when an enhancer is chosen.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from facepipe.patches import FramePatches, Patch, apply_patch, apply_patches, write_patches
from facepipe.runtime import BoundRunner, create_session, runs_on_gpu
from facepipe.video import WorkFrame

log = logging.getLogger(__name__)

# Five-point FFHQ alignment template at unit scale (the one FaceFusion uses for GFPGAN).
FFHQ_TEMPLATE = np.array(
    [[0.37691676, 0.46864664], [0.62285697, 0.46912813], [0.50123859, 0.61331904],
     [0.39308822, 0.72541100], [0.61150205, 0.72490465]], dtype=np.float32)
# How much of the enhanced face is blended over the swapped one.
BLEND = 0.8


class GFPGAN:
    def __init__(self, model: str | Path, providers: list[str], *, threads: int = 0, precision: str = "fp32"):
        self.session = create_session(model, providers, threads=threads, precision=precision)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.size = int(inp.shape[-1]) if isinstance(inp.shape[-1], int) else 512
        # On a GPU the output buffer is allocated there once (IO binding), not at every face.
        self._bound = BoundRunner(self.session) if runs_on_gpu(self.session) else None

    def patch(self, img: np.ndarray, kps: np.ndarray) -> Patch:
        """The enhanced face as an aligned-crop patch (already blended with the crop it replaces)."""
        matrix, _ = cv2.estimateAffinePartial2D(kps.reshape(5, 2), FFHQ_TEMPLATE * self.size, method=cv2.LMEDS)
        crop = cv2.warpAffine(img, matrix, (self.size, self.size), borderMode=cv2.BORDER_REPLICATE,
                              flags=cv2.INTER_AREA)
        blob = crop[:, :, ::-1].astype(np.float32) / 255.0
        blob = ((blob - 0.5) / 0.5).transpose(2, 0, 1)[None]
        inputs = {self.input_name: np.ascontiguousarray(blob, np.float32)}
        out = (self._bound.run(inputs) if self._bound else self.session.run(None, inputs))[0][0]
        out = (np.clip(out, -1, 1) + 1) / 2
        enhanced = (out.transpose(1, 2, 0)[:, :, ::-1] * 255.0).round().clip(0, 255).astype(np.uint8)
        enhanced = cv2.addWeighted(crop, 1 - BLEND, enhanced, BLEND, 0)
        return Patch(kind="ffhq", image=enhanced, matrix=matrix)


def enhance_segment(frames: Iterable[WorkFrame], swap_patches: str | Path, enhancer: GFPGAN,
                    out: str | Path) -> int:
    """Enhance the swapped faces of a segment; writes the swap patches followed, frame by frame,
    by the enhancer's (applied in that order they give the enhanced frame)."""
    by_frame = FramePatches(swap_patches)
    count = 0

    def frames_of_patches():
        nonlocal count
        for frame in frames:
            swapped = by_frame.get(frame.number)
            if not swapped:
                continue
            img = frame.bgr().copy()
            apply_patches(img, swapped)
            patches = list(swapped)
            for face in swapped:
                patch = enhancer.patch(img, face.kps)
                patch.frame, patch.face, patch.kps = face.frame, face.face, face.kps
                apply_patch(img, patch)
                patches.append(patch)
                count += 1
            yield patches

    write_patches(frames_of_patches(), out)
    log.info("enhanced %d faces", count)
    return count


def pass_through_segment(swap_patches: str | Path, out: str | Path) -> None:
    """The swap patches unchanged (the enhancer was dropped to save GPU memory)."""
    import shutil

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.copyfile(swap_patches, tmp)
    os.replace(tmp, out)
