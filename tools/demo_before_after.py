"""The README's before/after picture of the demo: the demo's face cropped from a few frames of its
target and of its result, side by side.

Run it in the workflow's folder after a finished demo run (`snakemake --cores all`):

    python tools/demo_before_after.py                     # writes docs/demo_before_after.png

The face is found in each target frame by dlib's detector (the offline backend's dependency), and
the same square, with a margin, is cut from the result's frame (as the preview and QC sheets cut
theirs, facepipe.report.face_sheet). The PNG carries the AI-generated label.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facepipe.report.face_sheet import BACKGROUND, FONT, FONT_SCALE, face_region  # noqa: E402

SIDE = 224  # px of each crop in the picture: small enough for the README, large enough to judge
MARGIN = 0.25  # around dlib's face box, a fraction of its side: the face fills the crop


def decode(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    """BGR frames of a video by number (from 1)."""
    import av

    out = {}
    with av.open(str(path)) as container:
        for number, frame in enumerate(container.decode(video=0), start=1):
            if number in wanted:
                out[number] = frame.to_ndarray(format="bgr24")
            if number >= max(wanted):
                break
    missing = wanted - set(out)
    if missing:
        raise SystemExit(f"{path} has no frame {sorted(missing)}")
    return out


def largest_face(img: np.ndarray, where: str) -> tuple[float, float, float, float]:
    import dlib

    found = dlib.get_frontal_face_detector()(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), 1)
    if not found:
        raise SystemExit(f"no face found in {where}")
    face = max(found, key=lambda r: r.area())
    return float(face.left()), float(face.top()), float(face.right()), float(face.bottom())


def crop(img: np.ndarray, region: tuple[int, int, int]) -> np.ndarray:
    x, y, side = region
    h, w = img.shape[:2]
    pad = max(0, -x, -y, x + side - w, y + side - h)
    img = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else img
    return cv2.resize(img[y + pad:y + pad + side, x + pad:x + pad + side], (SIDE, SIDE), interpolation=cv2.INTER_AREA)


def picture(target: Path, result: Path, frames: list[int]) -> np.ndarray:
    """A pair of crops per frame, before (the target) and after (the result), each labelled."""
    before, after = decode(target, set(frames)), decode(result, set(frames))
    band_h, gap = 26, 4
    cells = []
    for number in frames:
        box = largest_face(before[number], f"frame {number} of {target}")
        region = face_region(box, before[number].shape, MARGIN)
        for name, frames_of in (("before", before), ("after", after)):
            band = np.full((band_h, SIDE, 3), BACKGROUND, np.uint8)
            cv2.putText(band, f"{name}, frame {number}", (4, band_h - 8), FONT, FONT_SCALE * 0.9, (0, 0, 0), 1,
                        cv2.LINE_AA)
            cells.append(np.vstack([band, crop(frames_of[number], region)]))
    spacer = np.full((band_h + SIDE, gap, 3), BACKGROUND, np.uint8)
    row = []
    for i, cell in enumerate(cells):
        row += [cell] if i == 0 else [spacer, spacer, cell] if i % 2 == 0 else [spacer, cell]
    return np.hstack(row)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=Path, default=Path("resources/demo/target.mp4"))
    parser.add_argument("--result", type=Path, default=Path("results/demo.mp4"))
    parser.add_argument("--frames", type=int, nargs="+", default=[12, 62],
                        help="frames (from 1) to show; the defaults are the demo's two opposite turns")
    parser.add_argument("--out", type=Path, default=Path("docs/demo_before_after.png"))
    args = parser.parse_args(argv)
    from facepipe.media.files import write_labelled_png

    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_labelled_png(picture(args.target, args.result, args.frames), args.out)
    print(f"{args.out}: {args.out.stat().st_size // 1024} kB")


if __name__ == "__main__":
    main()
