"""A quick look before the full run: a handful of frames of a job through the same stages.

The preview is one more "segment" of the job, named ``preview``, whose frames are a few chosen
frames of the video rather than a range of it. Its faces table and tracks are cut from the job's
own (so the persons and their ids are the cast's), and the swap and enhancement stages run on it
exactly as on any segment. So trying ``faces``, ``map``, ``enhancer`` on the preview reruns the
swap (and enhancement) of these few frames only, and what the preview shows is what the full run
will do on them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

PREVIEW = "preview"
FRAMES = 6  # frames in a preview
WIDTH = 480  # each side of a before/after pair is scaled to this width at most


def choose_frames(persons: list[dict], starts: dict[str, int], total: int, count: int = FRAMES) -> list[int]:
    """Video frames (from 1) for the preview: each person's best detected face first (the most
    present persons first, up to ``count``), then frames spread evenly over the video."""
    chosen: list[int] = []
    for person in sorted(persons, key=lambda p: (-p["presence"], p["person"]))[:count]:
        thumb = person["thumbnail"]
        frame = starts[thumb["segment"]] + thumb["frame"]
        if frame not in chosen:
            chosen.append(frame)
    for frame in np.linspace(1, total, count + 2)[1:-1].round().astype(int).tolist():
        if len(chosen) >= count:
            break
        if frame not in chosen:
            chosen.append(frame)
    return sorted(chosen)


def plan_preview(manifest: dict, prepared_dir: str | Path, faces_dir: str | Path, tracks: str | Path,
                 persons: str | Path, manifest_out: str | Path, faces_out: str | Path, tracks_out: str | Path,
                 count: int = FRAMES) -> list[int]:
    """Choose the preview's frames and write its plan (a manifest whose segment ``preview`` lists
    them), its faces table and its tracks, cut from the job's. Reads tables only."""
    import os

    from facepipe.faces import write_faces
    from facepipe.integrity import read_sealed_json, write_sealed_json
    from facepipe.tables import FACES_SCHEMA, TRACKS_SCHEMA, TableWriter, read_columns
    from facepipe.video import planned_starts

    starts = planned_starts(manifest)
    cast = read_sealed_json(persons)["persons"]
    frames = choose_frames(cast, starts, manifest["frames"], count)
    ordered = sorted(starts.items(), key=lambda kv: kv[1])
    face_rows, track_rows = [], []
    for index, frame in enumerate(frames, start=1):
        segment, start = [(s, st) for s, st in ordered if st < frame][-1]
        local = frame - start
        faces = read_columns(Path(faces_dir) / f"{segment}.parquet", where=("frame", local))
        face_rows += [{**row, "frame": index} for row in faces[FACES_SCHEMA.names].to_dict("records")]
        tracked = read_columns(tracks, where=("segment", segment))
        tracked = tracked[tracked["seg_frame"] == local]
        track_rows += [{**row, "segment": PREVIEW, "seg_frame": index}
                       for row in tracked[TRACKS_SCHEMA.names].to_dict("records")]
    write_faces([face_rows], faces_out)
    with TableWriter(tracks_out, TRACKS_SCHEMA) as writer:
        writer.add(track_rows)
    plan = dict(manifest)
    plan["segments"] = {PREVIEW: len(frames)}
    plan["ranges"] = {**manifest.get("ranges", {}), PREVIEW: {"frames_at": frames}}
    if manifest.get("source"):  # a transcoded copy of the target, beside the job's own plan
        plan["source"] = os.path.relpath(Path(prepared_dir) / manifest["source"], Path(manifest_out).parent)
    write_sealed_json(manifest_out, plan)
    log.info("preview frames %s (of %d); %d faces, %d of them tracked", frames, manifest["frames"], len(face_rows),
             len(track_rows))
    return frames


def _fit(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    if w <= WIDTH:
        return img
    return cv2.resize(img, (WIDTH, round(h * WIDTH / w)), interpolation=cv2.INTER_AREA)


def before_after_sheet(pairs: list[tuple[int, np.ndarray, np.ndarray]], fps: float) -> np.ndarray:
    """Rows of (before | after) pairs, each labelled with its frame (and time)."""
    rows = []
    for frame, before, after in pairs:
        left, right = _fit(before), _fit(after)
        label = f"frame {frame}" + (f"  {(frame - 1) / fps:.2f} s" if fps else "")
        band = np.full((22, left.shape[1] + right.shape[1] + 4, 3), 255, np.uint8)
        cv2.putText(band, f"{label}: before", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(band, "after", (left.shape[1] + 8, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
        gap = np.full((left.shape[0], 4, 3), 255, np.uint8)
        rows += [band, np.hstack([left, gap, right])]
    width = max(r.shape[1] for r in rows)
    return np.vstack([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows])


def render_preview(target: str | Path, plan_path: str | Path, patches: str | Path, out: str | Path) -> None:
    """The preview sheet: each chosen frame as decoded and with the job's face patches."""
    from fractions import Fraction

    from facepipe.integrity import read_sealed_json
    from facepipe.media import write_labelled_png
    from facepipe.patches import read_patches
    from facepipe.video import iter_frames, render_image

    plan = read_sealed_json(plan_path)
    by_frame = read_patches(patches)
    frames_at = plan["ranges"][PREVIEW]["frames_at"] if not plan["is_image"] else [1]
    pairs = []
    for frame in iter_frames(target, Path(plan_path).parent, plan, PREVIEW):
        before = frame.bgr().copy()
        pairs.append((frames_at[frame.number - 1], before, render_image(frame, by_frame)))
    fps = 0.0 if plan["is_image"] else float(Fraction(plan["fps"]))
    write_labelled_png(before_after_sheet(pairs, fps), out)
    log.info("preview of %d frames: %s", len(pairs), out)
