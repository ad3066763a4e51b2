"""The quality-control figures of a finished job, for Snakemake's HTML report.

- a before/after sheet of the swapped faces, cropped and enlarged, each with its person (facepipe.report.face_sheet);
- a timeline per frame: faces detected, faces swapped, gaps filled, the persons' tracks, shot cuts;
- the identity distance of the swapped faces to the source over time, measured by the backend's
  own recognizer on the result (and, for comparison, on the target's faces at the same places);
- the stage timings from the benchmark files;
- the provider each model ran on, and any degradation.

Figures are drawn with matplotlib, off-screen.
"""

from __future__ import annotations

import logging
import os
import re
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from facepipe.faces.embedding import load_embedding
from facepipe.faces.tracking import distance
from facepipe.gpu import summarize
from facepipe.media.files import temporary_beside
from facepipe.media.integrity import read_sealed_json
from facepipe.media.patches import iter_patches, read_patches
from facepipe.media.tables import read_columns
from facepipe.media.video import iter_frames, load_plan, planned_starts
from facepipe.models.backends import METRICS
from facepipe.progress import Progress, counted, say
from facepipe.report.face_sheet import SheetFace, kept_map, write_face_sheet
from facepipe.report.preview import choose_frames

log = logging.getLogger(__name__)

SAMPLES = 40  # swapped faces measured for the similarity plot
MEASURE_SIDE = 240  # px: the largest region around a face the recognizer runs on (face_identity)
SHEET_FRAMES = 6


def _pyplot():
    # lazy: matplotlib is slow to import, and only this path needs it
    import matplotlib

    matplotlib.use("Agg")
    # lazy: matplotlib is slow to import, and only this path needs it
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: str | Path) -> None:
    tmp = temporary_beside(out, ".png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
    _pyplot().close(fig)
    os.replace(tmp, out)


# ---------------------------------------------------------------------------------------------
# What happened on each frame


def frame_counts(manifest: dict, faces_dir: Path, swapped_dir: Path, tracks: Path) -> pd.DataFrame:
    """Per video frame: faces detected, faces swapped, gaps filled (tables only)."""

    total = manifest["frames"]
    counts = pd.DataFrame({"frame": np.arange(1, total + 1), "detected": 0, "swapped": 0, "filled": 0})
    for segment, start in planned_starts(manifest).items():
        faces = read_columns(faces_dir / f"{segment}.parquet", ["frame", "hold"])
        detected = faces[~faces["hold"].astype(bool)].groupby("frame").size()
        counts.loc[start + detected.index - 1, "detected"] = detected.to_numpy()
        for frame, patches in iter_patches(swapped_dir / f"{segment}.parquet"):
            counts.loc[start + frame - 1, "swapped"] = len(patches)
    tracked = read_columns(tracks, ["frame", "filled"])
    filled = tracked[tracked["filled"].astype(bool)].groupby("frame").size()
    counts.loc[filled.index - 1, "filled"] = filled.to_numpy()
    return counts


def timeline_figure(counts: pd.DataFrame, tracks: pd.DataFrame, cuts: list[int], out: str | Path) -> None:
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True, height_ratios=[1, 1.2])
    for column, colour in (("detected", "tab:blue"), ("swapped", "tab:red"), ("filled", "tab:green")):
        top.step(counts["frame"], counts[column], where="mid", label=f"faces {column}", color=colour,
                 linewidth=1.2, alpha=0.85)
    top.set_ylabel("faces")
    top.legend(loc="upper right", fontsize=8)
    if len(tracks):
        scatter = bottom.scatter(tracks["frame"], tracks["person"], c=tracks["track"], cmap="tab20", s=6,
                                 marker="s", linewidths=0)
        filled = tracks[tracks["filled"].astype(bool)]
        bottom.scatter(filled["frame"], filled["person"], facecolors="none", edgecolors="black", s=18,
                       linewidths=0.6, label="filled over a detector miss")
        bottom.legend(loc="upper right", fontsize=8)
        del scatter
        bottom.set_yticks(sorted(tracks["person"].unique()))
    bottom.set_ylabel("person (colour: track)")
    bottom.set_xlabel("frame")
    for ax in (top, bottom):
        for cut in cuts:
            ax.axvline(cut - 0.5, color="grey", linestyle="--", linewidth=0.8)
    top.set_title("Faces per frame; dashed lines: shot cuts")
    _save(fig, out)


# ---------------------------------------------------------------------------------------------
# Identity of the swapped faces


def swapped_faces(manifest: dict, swapped_dir: Path, tracks: Path) -> pd.DataFrame:
    """Every swapped face: its video frame, its 5 keypoints, and the tracked row it was made for
    (person and box), found by segment, frame and face."""

    rows = []
    for segment, start in planned_starts(manifest).items():
        for frame, patches in iter_patches(swapped_dir / f"{segment}.parquet"):
            rows += [{"segment": segment, "seg_frame": frame, "face": p.face, "frame": start + frame,
                      "patch_kps": np.asarray(p.kps, np.float64).reshape(5, 2)}
                     for p in patches if p.kps is not None]
    columns = ["segment", "seg_frame", "face", "frame", "patch_kps"]
    swapped = pd.DataFrame(rows, columns=columns)
    tracked = read_columns(tracks, ["segment", "seg_frame", "face", "person", "filled", "x1", "y1", "x2", "y2",
                                    "kps"])
    return swapped.merge(tracked, on=["segment", "seg_frame", "face"], how="left").sort_values(
        ["frame", "person"], kind="stable").reset_index(drop=True)


def result_frames(result: str | Path, wanted: set[int], is_image: bool) -> dict[int, np.ndarray]:
    """BGR frames of the result by video frame number (from 1)."""
    if is_image:
        return {1: cv2.imread(str(result), cv2.IMREAD_COLOR)}
    # lazy: PyAV is slow to import, and only this path needs it
    import av

    out = {}
    last = max(wanted) if wanted else 0
    with av.open(str(result)) as container:
        for number, frame in enumerate(container.decode(video=0), start=1):
            if number in wanted:
                # As the working frames are made (WorkFrame.bgr): the same conversion before and after,
                # whatever matrix the result is labelled with.
                out[number] = cv2.cvtColor(frame.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2BGR_I420)
            if number >= last:
                break
    return out


def face_identity(analyzer, img: np.ndarray, kps: np.ndarray) -> np.ndarray | None:
    """The recognizer's embedding of the face at these keypoints: the analyzer runs on the region
    around them, and the face nearest their centre is taken."""
    centre = kps.mean(axis=0)
    size = max(np.ptp(kps[:, 0]), np.ptp(kps[:, 1]), 8.0) * 2.5
    h, w = img.shape[:2]
    x0, y0 = int(max(0, centre[0] - size)), int(max(0, centre[1] - size))
    x1, y1 = int(min(w, centre[0] + size)), int(min(h, centre[1] + size))
    region = np.ascontiguousarray(img[y0:y1, x0:x1])
    if region.size == 0:
        return None
    # A large face is measured at a smaller scale: the detector's cost grows with the pixels, and
    # the face still fills the recognizer's own input (dlib's 150 px chip) from there.
    scale = min(1.0, MEASURE_SIDE / max(region.shape[:2]))
    if scale < 1.0:
        region = cv2.resize(region, (max(1, round(region.shape[1] * scale)), max(1, round(region.shape[0] * scale))),
                            interpolation=cv2.INTER_AREA)
    faces = [f for f in analyzer.analyze(region) if f.get("embedding") is not None]
    if not faces:
        return None
    local = (centre - (x0, y0)) * scale
    best = min(faces, key=lambda f: float(np.linalg.norm(np.asarray(f["kps"]).reshape(5, 2).mean(axis=0) - local)))
    return np.asarray(best["embedding"], np.float64)


def identity_table(samples, after: dict, before: dict, analyzer, sources: list[np.ndarray], metric: str
                   ) -> pd.DataFrame:
    """Per sampled face: its distance to the nearest source, in the result and in the target."""

    rows = []
    for frame, kps in samples:
        row = {"frame": frame}
        for name, frames in (("after", after), ("before", before)):
            img = frames.get(frame)
            emb = None if img is None else face_identity(analyzer, img, kps)
            row[name] = None if emb is None else min(distance(emb, s, metric) for s in sources)
        rows.append(row)
    return pd.DataFrame(rows, columns=["frame", "after", "before"])


def similarity_figure(table: pd.DataFrame, threshold: float, metric: str, out: str | Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.5))
    for column, style, label in (("before", "o", "target's face (before)"), ("after", "s", "swapped face (after)")):
        data = table.dropna(subset=[column])
        ax.plot(data["frame"], data[column], style, markersize=4, label=label, alpha=0.85)
    ax.axhline(threshold, color="grey", linestyle="--", linewidth=0.8, label="same-person distance")
    ax.set_xlabel("frame")
    ax.set_ylabel(f"{metric} distance to the source")
    unmeasured = int(table["after"].isna().sum())
    ax.set_title("Identity of the swapped faces (backend's recognizer; lower = closer to the source)"
                 + (f"; {unmeasured} face(s) not found again" if unmeasured else ""))
    ax.legend(loc="upper right", fontsize=8)
    _save(fig, out)


# ---------------------------------------------------------------------------------------------
# Timings, providers, degradation


def stage_timings(benchmarks: Path) -> pd.DataFrame:
    """Seconds and peak memory per rule, summed (time) and maxed (memory) over its segments."""
    rows = []
    for path in sorted(benchmarks.rglob("*.tsv")):
        try:
            table = pd.read_csv(path, sep="\t")
        except (OSError, ValueError, pd.errors.ParserError):
            continue
        rule = path.parent.name if path.parent != benchmarks else path.stem
        rows.append({"rule": rule, "seconds": float(table["s"].iloc[-1]),
                     "max_rss_mb": pd.to_numeric(table.get("max_rss", pd.Series([np.nan])), errors="coerce").iloc[-1]})
    if not rows:
        return pd.DataFrame(columns=["rule", "seconds", "max_rss_mb", "jobs"])
    data = pd.DataFrame(rows)
    return data.groupby("rule", sort=False).agg(seconds=("seconds", "sum"), max_rss_mb=("max_rss_mb", "max"),
                                                jobs=("seconds", "size")).reset_index()


def timings_figure(timings: pd.DataFrame, out: str | Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.4 * max(1, len(timings))))
    if len(timings):
        labels = [f"{r.rule} ({r.jobs} job{'s' if r.jobs > 1 else ''})" for r in timings.itertuples()]
        ax.barh(labels, timings["seconds"], color="tab:blue")
        for y, r in enumerate(timings.itertuples()):
            mem = "" if pd.isna(r.max_rss_mb) else f", peak {r.max_rss_mb:.0f} MB"
            ax.text(r.seconds, y, f" {r.seconds:.1f} s{mem}", va="center", fontsize=8)
        ax.invert_yaxis()
    ax.set_xlabel("seconds (summed over segments)")
    ax.set_title("Stage timings (Snakemake benchmark files)")
    _save(fig, out)


PROVIDER_LINE = re.compile(r"(?P<model>[^\s]+\.onnx) runs on (?P<provider>\w+)")


def providers(logs: Path) -> pd.DataFrame:
    """The provider each model ran on, per rule, from the rules' logs (facepipe.models.runtime's lines)."""
    rows = []
    for path in sorted(logs.rglob("*.log")):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        rule = path.parent.name if path.parent != logs else path.stem
        # One per model and job (a model on a fallback provider is named in a warning as well).
        for model, provider in sorted({(Path(m["model"]).name, m["provider"]) for m in PROVIDER_LINE.finditer(text)}):
            rows.append({"rule": rule, "model": model, "provider": provider})
    data = pd.DataFrame(rows, columns=["rule", "model", "provider"])
    if data.empty:
        return data.assign(jobs=pd.Series(dtype=int))
    return data.groupby(["rule", "model", "provider"]).size().reset_index(name="jobs")


def providers_figure(table: pd.DataFrame, degradations: list[str], backend: str, out: str | Path) -> None:
    plt = _pyplot()
    cells = [[r.rule, r.model, r.provider, str(r.jobs)] for r in table.itertuples()]
    if not cells:
        cells = [["-", f"backend {backend}: no ONNX model", "-", "-"]]
    fig, ax = plt.subplots(figsize=(9, 0.8 + 0.3 * (len(cells) + len(degradations))))
    ax.axis("off")
    ax.table(cellText=cells, colLabels=["rule", "model", "provider", "jobs"], loc="upper center",
             cellLoc="left")
    note = ("Degraded GPU jobs:\n" + "\n".join(degradations)) if degradations else "No job ran degraded."
    ax.set_title(f"Providers (backend {backend})\n{note}", fontsize=9, loc="left")
    _save(fig, out)


# ---------------------------------------------------------------------------------------------
# The whole report of a job


def qc_report(*, name: str, target: str | Path, result: str | Path, plan: str | Path, faces_dir: Path,
              swapped_dir: Path, tracks: Path, persons: Path, embeddings: list[str], backend: str,
              analyzer, outputs: dict, threshold: float) -> None:

    # Progress on the console too (facepipe.progress): the identity check analyses up to SAMPLES
    # faces twice, which on a CPU takes a while.
    say(log, "qc_report: faces detected, tracked and swapped per frame")
    manifest, prepared = load_plan(plan)
    cast = read_sealed_json(persons)
    metric = METRICS[backend]
    counts = frame_counts(manifest, faces_dir, swapped_dir, tracks)
    tracked = read_columns(tracks, ["frame", "person", "track", "filled"])
    timeline_figure(counts, tracked, cast["cuts"], outputs["timeline"])

    faces = swapped_faces(manifest, swapped_dir, tracks)
    pairs = list(zip(faces["frame"], faces["patch_kps"]))
    samples = [pairs[i] for i in np.linspace(0, len(pairs) - 1, min(SAMPLES, len(pairs))).round().astype(int)] \
        if pairs else []
    # The sheet shows the swapped faces: frames chosen among them, each face with its person.
    shown = faces.dropna(subset=["person"]).astype({"person": int})
    sheet_frames = choose_frames(shown, cast["persons"], planned_starts(manifest), manifest["frames"], SHEET_FRAMES)
    wanted = sorted({f for f, _ in samples} | set(sheet_frames))
    say(log, "qc_report: decoding %d frames of the result and of the target", len(wanted))
    after = result_frames(result, set(wanted), manifest["is_image"])
    decode_plan = dict(manifest)
    if not manifest["is_image"]:
        decode_plan["ranges"] = {**manifest["ranges"], "qc": {"frames_at": wanted}}
    before = {f: frame.bgr() for f, frame in zip(wanted, iter_frames(target, prepared, decode_plan, "qc"))}
    sources = [load_embedding(path) for path in embeddings]
    with Progress(len(samples), "qc_report identity of the swapped faces", log) as progress:
        identities = identity_table(counted(samples, progress), after, before, analyzer, sources, metric)
    identities.to_csv(outputs["identity_table"], sep="\t", index=False)
    similarity_figure(identities, threshold, metric, outputs["similarity"])

    say(log, "qc_report: face sheet, timings and providers")
    fps = 0.0 if manifest["is_image"] else float(Fraction(manifest["fps"]))
    # The masks' view: what the swap's masks kept of each sheet frame (its segment's patches).
    where = {int(r.frame): (r.segment, int(r.seg_frame)) for r in faces.itertuples()}
    segment_patches = {seg: read_patches(swapped_dir / f"{seg}.parquet")
                       for seg in {where[f][0] for f in sheet_frames if f in where}}
    kept = {f: kept_map(segment_patches[where[f][0]].get(where[f][1], []), before[f].shape[:2])
            for f in sheet_frames if f in where and f in before}
    write_face_sheet([(f, before[f], after[f], [SheetFace(f, int(r.person), (r.x1, r.y1, r.x2, r.y2))
                                                for r in shown[shown["frame"] == f].itertuples()], kept.get(f))
                      for f in sheet_frames if f in before and f in after], fps, outputs["sheet"])
    timings_figure(stage_timings(Path("benchmarks") / name), outputs["timings"])
    degraded = [line for line in summarize("work", logger=log) if line.startswith(f"{name}/")]
    providers_figure(providers(Path("logs") / name), degraded, backend, outputs["providers"])
    log.info("QC of job %s: %d frames, %d swapped faces (%d measured)", name, manifest["frames"], len(faces),
             len(samples))
