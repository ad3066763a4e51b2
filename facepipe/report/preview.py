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
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd

from facepipe.faces.detection import write_faces
from facepipe.media.integrity import read_sealed_json, write_sealed_json
from facepipe.media.patches import read_patches
from facepipe.media.tables import FACES_SCHEMA, TRACKS_SCHEMA, TableWriter, read_columns
from facepipe.media.video import iter_frames, planned_starts, render_image
from facepipe.report.face_sheet import SheetFace, kept_map, write_face_sheet

log = logging.getLogger(__name__)

PREVIEW = "preview"
FRAMES = 6  # frames in a preview, at most


# Two frames whose faces differ by less than all of these are near-identical, and a sheet shows
# only one of them: each face's move (of its box's size), change of size (log ratio), and change of
# the shape its five keypoints make (of its box's size; a turn, a tilt, an opening mouth).
SAME_PLACE, SAME_SIZE, SAME_SHAPE = 0.15, 0.1, 0.04


def frame_faces(tracked: pd.DataFrame) -> dict[int, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Video frame -> person -> (box x1 y1 x2 y2, 5x2 keypoints), from rows of a tracks table."""
    out: dict[int, dict] = {}
    for row in tracked.itertuples(index=False):
        out.setdefault(int(row.frame), {})[int(row.person)] = (
            np.array([row.x1, row.y1, row.x2, row.y2], np.float64), np.asarray(row.kps, np.float64).reshape(5, 2))
    return out


def near_identical(a: dict, b: dict) -> bool:
    """Whether two frames' faces (frame_faces) are the same persons, each at about the same place,
    size and pose: a second such frame shows nothing the first does not."""
    if not a or set(a) != set(b):
        return False
    for person, (box_a, kps_a) in a.items():
        box_b, kps_b = b[person]
        size_a = max(box_a[2] - box_a[0], box_a[3] - box_a[1], 1.0)
        size_b = max(box_b[2] - box_b[0], box_b[3] - box_b[1], 1.0)
        moved = np.linalg.norm((box_a[:2] + box_a[2:]) / 2 - (box_b[:2] + box_b[2:]) / 2) / size_a
        shape_a, shape_b = (kps_a - kps_a.mean(axis=0)) / size_a, (kps_b - kps_b.mean(axis=0)) / size_b
        if (moved > SAME_PLACE or abs(np.log(size_b / size_a)) > SAME_SIZE
                or np.abs(shape_a - shape_b).max() > SAME_SHAPE):
            return False
    return True


def choose_frames(tracked: pd.DataFrame, persons: list[dict], starts: dict[str, int], total: int,
                  count: int = FRAMES) -> list[int]:
    """Video frames (from 1) for a sheet, up to ``count`` that differ: each person's best detected
    face first (the most present persons first), then frames with faces spread over the video (the
    one farthest in time from those chosen next), leaving out a frame near-identical to a chosen
    one (near_identical). tracked: the rows of a tracks table (frame, person, box, kps) of the
    persons to show (and ``filled``: frames with faces filled over a detector miss are taken only
    when there are no others). A video without tracked faces gets frames spread evenly over it."""
    faces = frame_faces(tracked)
    chosen: list[int] = []

    def take(frame: int) -> None:
        if frame not in chosen and not any(near_identical(faces.get(frame, {}), faces.get(c, {})) for c in chosen):
            chosen.append(frame)

    for person in sorted(persons, key=lambda p: (-p["presence"], p["person"])):
        if len(chosen) >= count:
            break
        thumb = person["thumbnail"]
        frame = starts[thumb["segment"]] + thumb["frame"]
        if person["person"] in faces.get(frame, {}):  # a person of those to show
            take(frame)
    # Frames whose faces the detector found: a face filled over a detector miss is often hidden.
    filled = tracked["filled"].astype(bool) if "filled" in tracked else np.zeros(len(tracked), bool)
    hidden = {int(f) for f in tracked.loc[filled, "frame"]}
    with_faces = sorted(set(faces) - hidden) or sorted(faces) or list(range(1, total + 1))
    pool = sorted({with_faces[i] for i in np.linspace(0, len(with_faces) - 1, 4 * count).round().astype(int)})
    middle = (with_faces[0] + with_faces[-1]) / 2
    while len(chosen) < count and pool:
        frame = max(pool, key=lambda f: min(abs(f - c) for c in chosen) if chosen else -abs(f - middle))
        pool.remove(frame)
        take(frame)
    return sorted(chosen)


TRACKED_COLUMNS = ["frame", "person", "filled", "x1", "y1", "x2", "y2", "kps"]


def plan_preview(manifest: dict, prepared_dir: str | Path, faces_dir: str | Path, tracks: str | Path,
                 persons: str | Path, manifest_out: str | Path, faces_out: str | Path, tracks_out: str | Path,
                 count: int = FRAMES) -> list[int]:
    """Choose the preview's frames and write its plan (a manifest whose segment ``preview`` lists
    them), its faces table and its tracks, cut from the job's. Reads tables only."""

    starts = planned_starts(manifest)
    cast = read_sealed_json(persons)["persons"]
    frames = choose_frames(read_columns(tracks, TRACKED_COLUMNS), cast, starts, manifest["frames"], count)
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


def sheet_faces(patches: list, tracked: pd.DataFrame, frame: int) -> list:
    """The swapped faces of one frame (facepipe.report.face_sheet.SheetFace), in the patches' order: each
    patch's face looked up in the frame's tracked rows (seg_frame, face) for its person and box."""

    rows = {int(r.face): r for r in tracked.itertuples(index=False)}
    out = []
    for patch in patches:
        row = rows.get(int(patch.face))
        if row is not None:
            out.append(SheetFace(frame, int(row.person), (row.x1, row.y1, row.x2, row.y2)))
    return out


def render_preview(target: str | Path, plan_path: str | Path, patches: str | Path, tracks: str | Path,
                   out: str | Path) -> None:
    """The preview sheet (facepipe.report.face_sheet): each swapped face of the chosen frames, as decoded
    and with the job's face patches, cropped and enlarged, labelled with its person."""

    plan = read_sealed_json(plan_path)
    by_frame = read_patches(patches)
    tracked = read_columns(tracks, ["seg_frame", "face", "person", "x1", "y1", "x2", "y2"])
    frames_at = plan["ranges"][PREVIEW]["frames_at"] if not plan["is_image"] else [1]
    frames = []
    for frame in iter_frames(target, Path(plan_path).parent, plan, PREVIEW):
        before = frame.bgr().copy()
        number = frames_at[frame.number - 1]
        faces = sheet_faces(by_frame.get(frame.number, []), tracked[tracked["seg_frame"] == frame.number], number)
        frames.append((number, before, render_image(frame, by_frame), faces,
                       kept_map(by_frame.get(frame.number, []), before.shape[:2])))
    fps = 0.0 if plan["is_image"] else float(Fraction(plan["fps"]))
    layout = write_face_sheet(frames, fps, out)
    log.info("preview of %d frames, %d swapped faces shown: %s", len(frames),
             sum(row["person"] is not None for row in layout["rows"]), out)
