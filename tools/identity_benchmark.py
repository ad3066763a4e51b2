#!/usr/bin/env python3
"""Identity benchmark of the offline mesh swap (facepipe.models.mesh_swap, the offline backend's default
swapper): how close dlib's descriptor of the swapped face comes to the source's, and whether the
target's expression (its mouth opening) is kept.

    python tools/identity_benchmark.py                              # this checkout's swap
    python tools/identity_benchmark.py --package-root /tmp/before   # another checkout's swap
    python tools/identity_benchmark.py --save /tmp/h21/after        # also the face crops as PNGs

Pairs: real photos shipped in installed packages, twelve pairs: scikit-image's astronaut as the
source on each of the six faces of insightface's group photo t1.jpg, and each of those six faces
as the source on the astronaut. Each target face is swapped as the workflow swaps it (the
mesh_warp adapter from facepipe.models.zoo, its source prepared from the record facepipe.faces.embedding
makes: source_patch's crop and points; the target face's landmark_box crop, patch_from_crop, the
patch applied to the frame), at shape_transfer 0 and at the package's default. The result's face
is read again by the offline analyzer (MediaPipe mesh + dlib ResNet) on its neighbourhood, and its
distance to the source's descriptor is printed per pair with the median.

Expression: a 16-frame clip of the astronaut whose mouth opens (to 0.17 of the face height) and
closes twice (tests/test_mesh.py's _open_mouth), swapped with t1's right woman as the source; the
correlation of the result's mouth opening with the target's, read as the height of the dark inside
of the mouth (pixels, no landmarks) and by the face mesh (inner-lip gap).

--swapper runs another offline swapper by its registry key on the same pairs (landmark_warp: the
classic 68-point warp, the offline swap before the mesh swap; shape_transfer does not apply to it).
--insides also measures the mesh swap's results with the insides of the eyes' lid contours and of
the mouth's inner lip contour taken from the classic warp's result (which brings the source's own:
its irises, the whites it shows, its teeth): how much of the distance lies in what the mesh swap
keeps of the target there (its gaze, blinks and mouth, i.e. its expression).

--shifts N measures again on the photos less their first 0..N-1 rows and columns: the same pixels at
another place in the detector's input, which moves the detection's box and so every mesh point by
a fraction of a pixel, as a camera's pan does. The medians move with it (see docs/benchmarks.md):
a difference between two versions smaller than that range is not shown by one run.

--package-root runs the swap of another checkout (e.g. ``git archive 1da6d4d | tar -x -C DIR``)
in a subprocess, while the faces are found and measured by this checkout's analyzer, so figures of
two versions differ only by their swap. Nothing is asserted; figures are measured here and now.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT = "default"
MESH = "mesh_warp"  # the offline backend's default swapper
CLASSIC = "landmark_warp"  # the classic 68-point warp, the offline swap before it


# -- the swap (run with the package under test: this checkout's, or --package-root's) ------------


def swap_jobs(jobs: list[dict]) -> list[dict]:
    """Each job: source image and its mesh points, target image and the faces' points, the
    shape_transfer (an int, or DEFAULT). Returns the swapped images, the seconds each face took and
    the shape_transfer used (None where the package has no such option)."""
    import numpy as np

    from facepipe.models import mesh_swap
    from facepipe.models.classic_swap import hull_bbox, source_patch
    from facepipe.faces.detection import CROP_MARGIN
    from facepipe.models.zoo import load
    from facepipe.media.patches import apply_patch

    default = getattr(mesh_swap, "SHAPE_TRANSFER", None)
    sources: dict = {}
    out = []
    for job in jobs:
        swapper = job.get("swapper", MESH)
        # shape_transfer is the mesh swap's option only (and a package before it has none).
        transfers = default is not None and swapper == MESH
        strength = default if job["shape_transfer"] == DEFAULT else job["shape_transfer"]
        kwargs = {"shape_transfer": strength} if transfers else {}
        key = (id(job["source"]), job["source_key"], strength, swapper)
        if key not in sources:
            crop, pts = source_patch(job["source"], job["source_pts"])
            adapter = load(swapper, None, [], **kwargs)
            sources[key] = (adapter, adapter.prepare_source({"source_crop": crop, "source_landmarks": pts}))
        adapter, source = sources[key]
        img = job["target"].copy()
        seconds = []
        for pts in job["target_pts"]:
            x0, y0, x1, y1 = hull_bbox(pts, img.shape[:2], CROP_MARGIN)
            crop = np.ascontiguousarray(img[y0:y1, x0:x1])
            best = float("inf")
            # CPU time (all threads), the least of a few runs: on a shared machine wall time mostly
            # measures the other processes.
            for _ in range(job.get("repeat", 1)):
                start = time.process_time()
                patch = adapter.swap([crop], [{"x": x0, "y": y0, "landmarks": pts.reshape(-1)}], source)[0]
                best = min(best, time.process_time() - start)
            seconds.append(best)
            if patch is not None:
                apply_patch(img, patch)
        out.append({"image": img, "seconds": seconds, "shape_transfer": strength if transfers else None})
    return out


def _worker(inp: str, outp: str, root: str) -> None:
    sys.path.insert(0, root)
    import facepipe

    if Path(facepipe.__file__).resolve().parents[1] != Path(root).resolve():
        raise SystemExit(f"facepipe imported from {facepipe.__file__}, not from {root}")
    with open(inp, "rb") as f:
        jobs = pickle.load(f)
    with open(outp, "wb") as f:
        pickle.dump(swap_jobs(jobs), f)


def run_swaps(jobs: list[dict], root: Path | None) -> list[dict]:
    if root is None:
        return swap_jobs(jobs)
    with tempfile.TemporaryDirectory() as tmp:
        inp, outp = Path(tmp) / "jobs.pkl", Path(tmp) / "out.pkl"
        inp.write_bytes(pickle.dumps(jobs))
        env = dict(os.environ, PYTHONPATH=str(root))
        subprocess.run([sys.executable, __file__, "--worker", str(inp), str(outp), str(root)], check=True, env=env)
        return pickle.loads(outp.read_bytes())


# -- faces and measurement (this checkout's analyzer) ----------------------------------------------


def analyzer(models: Path):
    from facepipe.models import face_mesh as mesh
    from facepipe.models import model_path

    models.mkdir(parents=True, exist_ok=True)
    for name in (mesh.DETECTOR_FILE, mesh.MESH_FILE):
        if not (models / name).is_file() or not mesh.source_copy(models / name).is_file():
            mesh.convert(mesh.tflite_path(name), models / name)
    return mesh.MeshAnalyzer(models / mesh.DETECTOR_FILE, model_path("dlib_resnet_v1", "offline"))


def photos(shift: int = 0):
    """t1.jpg and the astronaut (BGR), less their first ``shift`` rows and columns: the same pixels,
    at another place in the detector's input (as a camera's pan moves them)."""
    import cv2
    import numpy as np
    from skimage import data

    from facepipe.media import demo

    images = cv2.imread(str(demo.insightface_image("t1.jpg"))), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    return tuple(np.ascontiguousarray(img[shift:, shift:]) for img in images)


def largest(faces):
    import numpy as np

    return max(faces, key=lambda f: np.ptp(f["landmarks"][:, 0]) * np.ptp(f["landmarks"][:, 1]))


def read_face(an, img, pts, margin: float = 0.5):
    """The analyzer's record of the face at ``pts`` in ``img``, read on its neighbourhood (the face's
    box ``margin`` of its width wider on every side): the face nearest the box's centre."""
    import numpy as np

    w = float(np.ptp(pts[:, 0]))
    x0, y0 = np.maximum(pts.min(axis=0) - margin * w, 0).astype(int)
    x1, y1 = (pts.max(axis=0) + margin * w).astype(int)
    found = an.analyze(np.ascontiguousarray(img[y0:y1, x0:x1]))
    if not found:
        return None
    centre = pts.mean(axis=0) - (x0, y0)
    return min(found, key=lambda f: np.linalg.norm(f["landmarks"].mean(axis=0) - centre))


def face_crop(img, pts, margin: float = 0.25):
    import numpy as np

    w = float(np.ptp(pts[:, 0]))
    x0, y0 = np.maximum(pts.min(axis=0) - margin * w, 0).astype(int)
    x1, y1 = (pts.max(axis=0) + margin * w).astype(int)
    return img[y0:y1, x0:x1]


def identity(an, root, strengths, save: Path | None, repeat: int = 1, swapper: str = MESH,
             insides: bool = False, shift: int = 0) -> dict:
    import cv2
    import numpy as np

    t1, astronaut = photos(shift)
    t1_faces = sorted(an.analyze(t1), key=lambda f: f["landmarks"][:, 0].mean())
    ast = largest(an.analyze(astronaut))
    names = [f"t1 face {i + 1}" for i in range(len(t1_faces))]
    pairs = []  # (name, source image, source face, target image, target face)
    for name, face in zip(names, t1_faces):
        pairs.append((f"astronaut -> {name}", astronaut, ast, t1, face))
    for name, face in zip(names, t1_faces):
        pairs.append((f"{name} -> astronaut", t1, face, astronaut, ast))
    no_swap = [float(np.linalg.norm(tgt["embedding"] - src["embedding"])) for _, _, src, _, tgt in pairs]
    result = {"pairs": [p[0] for p in pairs], "no swap": no_swap, "swapper": swapper}

    def jobs_of(strength, key):
        return [{"source": s_img, "source_key": n.split(" -> ")[0], "source_pts": src["landmarks"], "target": t_img,
                 "target_pts": [tgt["landmarks"]], "shape_transfer": strength, "repeat": repeat, "swapper": key}
                for n, s_img, src, t_img, tgt in pairs]

    def distances(images):
        out = []
        for (_, _, src, _, tgt), img in zip(pairs, images):
            got = read_face(an, img, tgt["landmarks"])
            out.append(float("nan") if got is None else float(np.linalg.norm(got["embedding"] - src["embedding"])))
        return out

    for strength in strengths:
        outs = run_swaps(jobs_of(strength, swapper), root)
        dist = distances([out["image"] for out in outs])
        if save is not None:
            save.mkdir(parents=True, exist_ok=True)
            for (name, _, _, t_img, tgt), out in zip(pairs, outs):
                tag = name.replace(" -> ", "_to_").replace(" ", "")
                cv2.imwrite(str(save / f"{tag}_st{strength}.png"), face_crop(out["image"], tgt["landmarks"]))
                cv2.imwrite(str(save / f"{tag}_target.png"), face_crop(t_img, tgt["landmarks"]))
        result[f"shape_transfer {strength}"] = {
            "used": outs[0]["shape_transfer"], "distance": dist,
            "seconds per face": [s for out in outs for s in out["seconds"]]}
        if insides and strength == strengths[-1]:
            classic = [out["image"] for out in run_swaps(jobs_of(0, CLASSIC), root)]
            result["insides"] = {"shape_transfer": outs[0]["shape_transfer"], "classic": distances(classic)}
            for part, contours in insides_contours().items():
                mixed = [with_insides(out["image"], other, tgt["landmarks"], contours)
                         for out, other, (_, _, _, _, tgt) in zip(outs, classic, pairs)]
                result["insides"][part] = distances(mixed)
    return result


def insides_contours() -> dict:
    """Part -> the mesh contours (MediaPipe's topology, the same in every version) whose insides it is."""
    from facepipe.models import mesh_swap

    eyes = [mesh_swap.EYE_IMAGE_LEFT, mesh_swap.EYE_IMAGE_RIGHT]
    return {"eyes": eyes, "mouth": [mesh_swap.LIPS_INNER], "eyes and mouth": eyes + [mesh_swap.LIPS_INNER]}


INSIDES_MARGIN = 0.02  # share of the face width the insides reach past their contours, and their soft edge


def with_insides(image, other, pts, contours):
    """``image`` with ``other``'s pixels inside the mesh ``contours`` (INSIDES_MARGIN wider, soft-edged)."""
    import cv2
    import numpy as np

    from facepipe.models.mesh_swap import _poly_mask  # the swap's own filling of a mesh contour

    mask = np.zeros(image.shape[:2], np.uint8)
    for idx in contours:
        mask |= _poly_mask(pts, idx, mask.shape) > 0
    r = max(1, int(INSIDES_MARGIN * float(np.ptp(pts[:, 0]))))
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2))
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), r / 2 + 0.5)[..., None]
    return np.clip(np.round(image * (1 - alpha) + other * alpha), 0, 255).astype(np.uint8)


def mouth(an, root, swapper: str = MESH, shift: int = 0) -> dict:
    import numpy as np

    sys.path.insert(0, str(REPO))  # the checkout's tests package
    from tests.test_mesh import _dark_gap, _open_mouth, _opening

    t1, astronaut = photos(shift)
    source = max(an.analyze(t1, embed=False), key=lambda f: f["landmarks"][:, 0].mean())  # the right woman
    target = largest(an.analyze(astronaut, embed=False))
    pts = target["landmarks"].astype(np.float64)
    openings = -0.03 + 0.2 * (1 - np.cos(np.linspace(0, 4 * np.pi, 16))) / 2
    frames = [_open_mouth(astronaut, pts, o) for o in openings]
    faces = [largest(an.analyze(frame, embed=False)) for frame in frames]
    jobs = [{"source": t1, "source_key": "right woman", "source_pts": source["landmarks"], "target": frame,
             "target_pts": [face["landmarks"]], "shape_transfer": DEFAULT, "swapper": swapper}
            for frame, face in zip(frames, faces)]
    outs = run_swaps(jobs, root)
    gap = {"target": [_dark_gap(f, pts) for f in frames], "swap": [_dark_gap(o["image"], pts) for o in outs]}
    read = {"target": [_opening(f) for f in faces],
            "swap": [_opening(read_face(an, o["image"], f["landmarks"])) for o, f in zip(outs, faces)]}
    return {"dark gap": gap, "mesh read": read,
            "r dark gap": float(np.corrcoef(gap["swap"], gap["target"])[0, 1]),
            "r mesh read": float(np.corrcoef(read["swap"], read["target"])[0, 1])}


def report(package: str, ident: dict, m: dict | None, strengths: list, swapper: str, insides: bool) -> None:
    """Print one run's figures: each pair's distances, the medians, the insides' and the mouth's."""
    import numpy as np

    width = max(len(p) for p in ident["pairs"])
    print(f"{swapper} swap of {package}\ndlib distance to the source (lower is closer; same person < 0.6):")
    print(f"{'pair':<{width}}  no swap  " + "  ".join(f"st {ident[f'shape_transfer {s}']['used']}"
                                                     for s in strengths))
    for i, name in enumerate(ident["pairs"]):
        print(f"{name:<{width}}  {ident['no swap'][i]:7.3f}  " +
              "  ".join(f"{ident[f'shape_transfer {s}']['distance'][i]:5.3f}" for s in strengths))
    for s in strengths:
        fig = ident[f"shape_transfer {s}"]
        print(f"median at shape_transfer {s} ({fig['used']}): {fig['median']:.3f}; "
              f"swap {1000 * fig['median seconds per face']:.1f} ms CPU per face (median of the faces)")
    print(f"median without a swap: {float(np.median(ident['no swap'])):.3f}")
    if insides:
        fig = ident["insides"]
        print(f"{MESH} at shape_transfer {fig['shape_transfer']} with the insides of {CLASSIC}'s result "
              f"(median; {CLASSIC} alone: {float(np.nanmedian(fig['classic'])):.3f}):")
        for part in insides_contours():
            print(f"  {part:<16s} {float(np.nanmedian(fig[part])):.3f}")
    if m is not None:
        print(f"mouth opening's correlation with the target's (default shape_transfer): dark inside of the mouth "
              f"r = {m['r dark gap']:.3f}, face mesh's inner-lip gap r = {m['r mesh read']:.3f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package-root", type=Path, help="a checkout whose facepipe does the swap")
    parser.add_argument("--models", type=Path, default=Path(tempfile.gettempdir()) / "facepipe_offline_models",
                        help="where the converted MediaPipe models are kept (made when missing)")
    parser.add_argument("--save", type=Path, help="a folder for each result's face crop (PNG)")
    parser.add_argument("--json", type=Path, help="write the figures to this file too")
    parser.add_argument("--no-mouth", action="store_true", help="skip the mouth-opening clip")
    parser.add_argument("--repeat", type=int, default=1, help="time each face's swap as the fastest of this many")
    parser.add_argument("--swapper", default=MESH, help=f"the offline swapper's registry key (default {MESH}; "
                        f"{CLASSIC}: the classic 68-point warp)")
    parser.add_argument("--insides", action="store_true",
                        help="also the mesh swap with the classic warp's eyes' and mouth's insides (what they cost)")
    parser.add_argument("--shifts", type=int, default=1,
                        help="run on the photos less their first 0..N-1 rows and columns (the same pixels, elsewhere "
                        "in the detector's input) and print each run's medians, their mean and range")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(*args.worker)
        return 0
    sys.path.insert(0, str(REPO))
    import numpy as np

    if args.insides and args.swapper != MESH:
        parser.error(f"--insides measures the {MESH} swap")
    root = args.package_root.resolve() if args.package_root else None
    an = analyzer(args.models)
    # shape_transfer is the mesh swap's option: another swapper runs once.
    strengths = [0, DEFAULT] if args.swapper == MESH else [DEFAULT]
    figures = {"package": str(root or REPO), "shifts": []}
    for shift in range(max(1, args.shifts)):
        # Each shift's medians only: the saved crops and the insides' figures are shift 0's.
        ident = identity(an, root, strengths, args.save if shift == 0 else None, args.repeat, args.swapper,
                         args.insides and shift == 0, shift)
        for s in strengths:
            fig = ident[f"shape_transfer {s}"]
            fig["median"] = float(np.nanmedian(fig["distance"]))
            fig["median seconds per face"] = statistics.median(fig["seconds per face"])
        m = None if args.no_mouth else mouth(an, root, args.swapper, shift)
        if shift == 0:
            figures["identity"], figures["mouth"] = ident, m
            report(figures["package"], ident, m, strengths, args.swapper, args.insides)
        figures["shifts"].append({"shift": shift, "mouth": m, **{
            f"median at shape_transfer {ident[f'shape_transfer {s}']['used']}": ident[f"shape_transfer {s}"]["median"]
            for s in strengths}})
    if len(figures["shifts"]) > 1:
        print(f"the photos less their first 0..{len(figures['shifts']) - 1} rows and columns (the same pixels, "
              "elsewhere in the detector's input):")
        keys = [k for k in figures["shifts"][0] if k.startswith("median")]
        rows = [[f[k] for k in keys] + ([] if args.no_mouth else [f["mouth"]["r dark gap"], f["mouth"]["r mesh read"]])
                for f in figures["shifts"]]
        names = keys + ([] if args.no_mouth else ["mouth r, dark inside", "mouth r, mesh read"])
        for shift, row in enumerate(rows):
            print(f"  shift {shift}: " + ", ".join(f"{n} {v:.3f}" for n, v in zip(names, row)))
        table = np.array(rows)
        figures["over shifts"] = {n: {"mean": float(table[:, i].mean()), "min": float(table[:, i].min()),
                                      "max": float(table[:, i].max())} for i, n in enumerate(names)}
        for n, f in figures["over shifts"].items():
            print(f"  {n}: mean {f['mean']:.3f} (from {f['min']:.3f} to {f['max']:.3f})")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
