"""The cast of a job: the persons the tracker found (facepipe.faces.tracking), as a contact sheet and a table.

The ids on the sheet are the ones the ``map`` option names. Thumbnails are the crops detection
kept (the largest detected face of each person), so the sheet is made without decoding video.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import cv2
import numpy as np

from facepipe.media.files import temporary_beside, write_png
from facepipe.media.patches import decode_image
from facepipe.media.tables import read_columns

CELL = 160  # thumbnail side, px
TEXT_ROWS = 4
LINE = 18
COLUMNS = 6
COLUMNS_TSV = ["person", "frames", "seconds", "first_frame", "last_frame", "first_time", "last_time", "tracks",
               "filled_frames"]


def timestamp(frame: int, fps: float) -> str:
    """Frame n (from 1) as m:ss.s from the start of the (working) video."""
    if not fps:
        return ""
    seconds = (frame - 1) / fps
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def cast_rows(persons: dict) -> list[dict]:
    fps = persons.get("fps") or 0.0
    return [{"person": p["person"], "frames": p["frames"], "seconds": p["seconds"] if p["seconds"] is not None else "",
             "first_frame": p["first_frame"], "last_frame": p["last_frame"],
             "first_time": timestamp(p["first_frame"], fps), "last_time": timestamp(p["last_frame"], fps),
             "tracks": p["tracks"], "filled_frames": p["filled"]} for p in persons["persons"]]


def thumbnails(persons: dict, faces_dir: str | Path) -> dict[int, np.ndarray]:
    """Each person's thumbnail, from the crop of the face the tracker chose for it."""

    out = {}
    for p in persons["persons"]:
        ref = p["thumbnail"]
        rows = read_columns(Path(faces_dir) / f"{ref['segment']}.parquet", ["frame", "face", "crop"],
                            where=("frame", ref["frame"]))
        rows = rows[rows["face"] == ref["face"]]
        if len(rows) and rows["crop"].iloc[0] is not None:
            out[p["person"]] = decode_image(rows["crop"].iloc[0])
    return out


def _fit(img: np.ndarray, side: int) -> np.ndarray:
    h, w = img.shape[:2]
    scale = side / max(h, w)
    small = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    cell = np.full((side, side, 3), 40, np.uint8)
    y, x = (side - small.shape[0]) // 2, (side - small.shape[1]) // 2
    cell[y:y + small.shape[0], x:x + small.shape[1]] = small
    return cell


def contact_sheet(persons: dict, thumbs: dict[int, np.ndarray]) -> np.ndarray:
    """A grid of the persons: thumbnail, id, screen time, first and last appearance."""
    fps = persons.get("fps") or 0.0
    cast = persons["persons"]
    if not cast:
        sheet = np.full((60, 4 * CELL, 3), 255, np.uint8)
        cv2.putText(sheet, "no faces found", (10, 38), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 1, cv2.LINE_AA)
        return sheet
    columns = min(COLUMNS, len(cast))
    rows = -(-len(cast) // columns)
    cell_h = CELL + TEXT_ROWS * LINE + 8
    sheet = np.full((rows * cell_h, columns * CELL, 3), 255, np.uint8)
    for i, p in enumerate(cast):
        y, x = (i // columns) * cell_h, (i % columns) * CELL
        thumb = thumbs.get(p["person"])
        sheet[y:y + CELL, x:x + CELL] = _fit(thumb, CELL) if thumb is not None else 40
        screen = f"{p['seconds']:.1f} s on screen" if p["seconds"] is not None else "still image"
        lines = [f"person {p['person']}", screen, f"frames {p['first_frame']}-{p['last_frame']}"]
        if fps:
            lines.append(f"{timestamp(p['first_frame'], fps)}-{timestamp(p['last_frame'], fps)}")
        for k, text in enumerate(lines):
            cv2.putText(sheet, text, (x + 4, y + CELL + LINE * (k + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (0, 0, 0) if k else (0, 0, 160), 1, cv2.LINE_AA)
    return sheet


def write_cast(persons: dict, faces_dir: str | Path, sheet_out: str | Path, table_out: str | Path) -> None:
    """The cast sheet (PNG) and table (TSV), each written under a temporary name first."""

    sheet = contact_sheet(persons, thumbnails(persons, faces_dir))
    tmp = temporary_beside(sheet_out, ".png")
    write_png(tmp, sheet, compression=6)
    os.replace(tmp, sheet_out)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, COLUMNS_TSV, delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(cast_rows(persons))
    tmp = temporary_beside(table_out, ".tsv")
    Path(tmp).write_text(buf.getvalue())
    os.replace(tmp, table_out)
