#!/usr/bin/env python3
"""docs/masks.png: what each face mask keeps, as crops on real photos (the README's "Masks"
section). Offline backend (the swap every new user sees first), MediaPipe models converted into a
temporary folder; the source is t1.jpg's man in grey, the target scikit-image's astronaut with
objects cut from photos in installed packages (tests/occlusion_clips.py). The learned path's box
and mouth masks are shown on the swapper's aligned crop, what they keep tinted (no real learned
swapper is at hand to show its swap).

    python tools/mask_examples.py [out.png]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: the checkout's tests package

from tests import occlusion_clips as clips  # noqa: E402

from facepipe.media import demo  # noqa: E402
from facepipe.models import face_mesh as mesh  # noqa: E402
from facepipe.models.classic_swap import source_patch  # noqa: E402
from facepipe.models.alignment import alignment_matrix  # noqa: E402
from facepipe.report.face_sheet import mask_view  # noqa: E402
from facepipe.swap.masks import box_mask, mesh_region_keep, mouth_keep_mask  # noqa: E402
from facepipe.models.face_mesh import MeshAnalyzer  # noqa: E402
from facepipe.models.mesh_swap import MeshSwapper  # noqa: E402
from facepipe.models import model_path  # noqa: E402
from facepipe.swap.occlusion import TrackAppearance, keep_occluded, sample_frames  # noqa: E402
from facepipe.media.patches import apply_patch  # noqa: E402


def label(img: np.ndarray, text: str) -> np.ndarray:
    out = cv2.copyMakeBorder(img, 26, 0, 0, 0, cv2.BORDER_CONSTANT, value=(255, 255, 255))
    cv2.putText(out, text, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as folder:
        for name in (mesh.DETECTOR_FILE, mesh.MESH_FILE):
            mesh.convert(mesh.tflite_path(name), Path(folder) / name)
        analyzer = MeshAnalyzer(Path(folder) / mesh.DETECTOR_FILE, model_path("dlib_resnet_v1", "offline"))
        t1 = cv2.imread(str(demo.insightface_image("t1.jpg")))
        faces = analyzer.analyze(t1, embed=False)
        source = min(faces, key=lambda f: np.linalg.norm((f["box"][:2] + f["box"][2:]) / 2 - (515, 345)))
        swapper = MeshSwapper(*source_patch(t1, source["landmarks"]))
        frames, _ = clips.clip(clips.astronaut(), *clips.skin_hand(t1), scale=0.6)
        meshes = [analyzer.analyze(f, embed=False)[0]["landmarks"].astype(np.float32) for f in frames]
        appearance = TrackAppearance(meshes)
        for i in sorted(sample_frames(list(range(len(frames))))):
            appearance.add_sample(frames[i], meshes[i])
        i = 19  # the hand over the face's lower half
        frame, points = frames[i], meshes[i]

        def swapped(kept=None):
            result = frame.copy()
            patch = swapper.swap_one(frame, points)
            if kept is not None:
                keep_occluded(patch, frame, 0, 0, kept)
            apply_patch(result, patch)
            return result

        x, y, w, h = cv2.boundingRect(np.round(points).astype(np.int32))
        pad = int(0.2 * max(w, h))
        box = (max(0, x - pad), max(0, y - pad), x + w + pad, y + h + pad)

        def crop(img):
            c = img[box[1]:box[3], box[0]:box[2]]
            return cv2.resize(c, (240, int(240 * c.shape[0] / c.shape[1])), interpolation=cv2.INTER_CUBIC)

        cells = [label(crop(frame), "target"), label(crop(swapped()), "offline, no mask"),
                 label(crop(swapped(appearance.mask(frame, points))), "offline: occlusion"),
                 label(crop(swapped(mesh_region_keep(points, frame.shape[:2], ["skin"]))), "offline: region skin")]
        # The learned path's fixed masks on the swapper's own crop (arcface_128, 256 px).
        face = analyzer.analyze(clips.astronaut(), embed=False)[0]
        matrix = alignment_matrix(face["kps"], "arcface_128", 256)
        aligned = cv2.warpAffine(clips.astronaut(), matrix, (256, 256), flags=cv2.INTER_AREA)
        height = cells[0].shape[0] - 26
        for text, kept in (("learned: box (kept tinted)", 1 - box_mask(256, 0.3, (0, 0, 0, 0))),
                           ("learned: mouth (kept tinted)", mouth_keep_mask(256))):
            view = cv2.resize(mask_view(aligned, kept.astype(np.float32)), (height, height))
            cells.append(label(cv2.copyMakeBorder(view, 0, 0, 0, 240 - height, cv2.BORDER_CONSTANT,
                                                  value=(255, 255, 255)) if height < 240 else view[:, :240], text))
    sheet = np.hstack(cells)
    cv2.imwrite(str(out), sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {out} ({out.stat().st_size // 1024} kB)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "masks.png")
