#!/usr/bin/env python3
"""docs/glasses.png: glasses through the offline swap (the README's "Glasses" section), on
matplotlib's Grace Hopper and scikit-image's astronaut. Top: Grace Hopper as the target (the
astronaut as the source), her frame kept by the occlusion mask, as the swap stage does it. Bottom:
Grace Hopper as the source on the astronaut, her frame painted out of the source. MediaPipe models
converted into a temporary folder.

    python tools/glasses_examples.py [out.png]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from matplotlib import cbook
from skimage import data

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: the checkout's package and its tests' helpers

from tests.model_helpers import swap_with_occlusion  # noqa: E402

from facepipe.models import face_mesh as mesh  # noqa: E402
from facepipe.models import model_path  # noqa: E402
from facepipe.models.classic_swap import source_patch  # noqa: E402
from facepipe.models.face_mesh import MeshAnalyzer  # noqa: E402
from facepipe.models.mesh_swap import MeshSwapper  # noqa: E402
from facepipe.swap.occlusion import TrackAppearance  # noqa: E402

TILE = 300


def label(img: np.ndarray, text: str) -> np.ndarray:
    out = cv2.copyMakeBorder(img, 26, 0, 0, 0, cv2.BORDER_CONSTANT, value=(255, 255, 255))
    cv2.putText(out, text, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def face_tile(img: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """The face (its mesh's box, a fifth wider) enlarged to TILE x TILE."""
    lo, hi = pts.min(0), pts.max(0)
    centre, side = (lo + hi) / 2, float((hi - lo).max()) * 1.2
    x0, y0 = (int(round(v - side / 2)) for v in centre)
    s = int(round(side))
    padded = cv2.copyMakeBorder(img, s, s, s, s, cv2.BORDER_REPLICATE)
    return cv2.resize(padded[y0 + s:y0 + 2 * s, x0 + s:x0 + 2 * s], (TILE, TILE), interpolation=cv2.INTER_CUBIC)


def swapped(analyzer, source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The target with its face swapped from the source's as the swap stage does it (the occlusion
    mask from the track's appearance, here one frame), and the target's mesh."""
    src = analyzer.analyze(source, embed=False)[0]
    swapper = MeshSwapper(*source_patch(source, src["landmarks"]))
    pts = analyzer.analyze(target, embed=False)[0]["landmarks"].astype(np.float32)
    appearance = TrackAppearance([pts])
    appearance.add_sample(target, pts)
    return swap_with_occlusion(swapper, target, pts, appearance), pts


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as folder:
        for name in (mesh.DETECTOR_FILE, mesh.MESH_FILE):
            mesh.convert(mesh.tflite_path(name), Path(folder) / name)
        analyzer = MeshAnalyzer(Path(folder) / mesh.DETECTOR_FILE, model_path("dlib_resnet_v1", "offline"))
        grace = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
        astronaut = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
        rows = []
        for source, target, names in ((astronaut, grace, ("target: Grace Hopper", "astronaut onto her")),
                                      (grace, astronaut, ("target: the astronaut", "Grace Hopper onto her"))):
            result, pts = swapped(analyzer, source, target)
            rows.append(np.hstack([label(face_tile(target, pts), names[0]), label(face_tile(result, pts), names[1])]))
    cv2.imwrite(str(out), np.vstack(rows))
    print(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "glasses.png")
