"""Face enhancement, applied to the faces the swap replaced: each swapped face is cut from its
swapped frame, restored by the job's enhancer (facepipe.models.face_restorer) and handed on as
a patch.

The module is imported, and the model loaded, only by the enhancement rule, which is in the
DAG only when an enhancer is chosen.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Iterable

import numpy as np

from facepipe.media.integrity import place_sealed, verify
from facepipe.media.patches import FramePatches, Patch, apply_patches, mask_in_crop, write_patches
from facepipe.media.tone import keep_monochrome
from facepipe.media.video import WorkFrame

log = logging.getLogger(__name__)

def enhance_segment(frames: Iterable[WorkFrame], swap_patches: str | Path, enhancer, out: str | Path) -> int:
    """Enhance the swapped faces of a segment with ``enhancer`` (a FaceRestorer); writes the swap
    patches followed, frame by frame,
    by the enhancer's (applied in that order they give the enhanced frame). A swapped face's paste
    mask goes with it into the enhancer's crop (facepipe.media.patches.mask_in_crop).

    Every face is cropped from its swapped frame, so the faces of several frames go through
    the enhancer together, ``enhancer.batch_size`` at a time.
    """
    by_frame = FramePatches(swap_patches)
    count = 0

    def enhanced(pending: list[list[Patch]], crops: list[tuple[np.ndarray, np.ndarray]]):
        faces = iter(zip(enhancer.enhance([crop for crop, _ in crops]), crops))
        for swapped in pending:
            patches = list(swapped)
            for face in swapped:
                image, (crop, matrix) = next(faces)
                # A restorer paints faces in colour: on a monochrome picture it keeps the picture's tone.
                image = keep_monochrome(image, crop)
                # What the swap kept of the target (an occluder, a region left out) stays the
                # target's in the enhanced face too: the swap's mask, in the enhancer's crop.
                patches.append(Patch(kind="feathered_crop", image=image, matrix=matrix, frame=face.frame,
                                     face=face.face, kps=face.kps,
                                     mask=mask_in_crop(face, matrix, image.shape[0])))
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

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.copyfile(verify(swap_patches), tmp)
    place_sealed(tmp, out)
