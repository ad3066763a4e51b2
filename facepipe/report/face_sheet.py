"""The before/after sheet of the preview and of QC: each swapped face cropped and enlarged.

A face of a few dozen pixels in a whole frame shrunk to a sheet's width cannot be judged, so each
row of the sheet is one swapped face of one frame: the face's box with a margin, scaled to CROP
pixels, before and after side by side, labelled with the person's id (the cast's, as in
results/NAME.cast.png) and the frame and its time, beside a small thumbnail of the whole frame
that marks where the face is. The layout (each row's person, frame, box and where its crops lie
on the sheet) is written into the PNG as a text chunk (LAYOUT_KEY), so tools and tests can read
what the sheet shows without guessing from its pixels.

Where the swap's masks kept some of the target's own pixels (facepipe.swap.masks: a hand in front of
the face, a region left out), a third crop shows the result with what was kept tinted, as
FaceFusion's face debugger does, so a user sees what the masks protected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facepipe.faces.cast import timestamp
from facepipe.media.files import write_labelled_png
from facepipe.media.patches import patch_to_frame

CROP = 288  # side of each enlarged face crop, px
MARGIN = 0.4  # room around the face box on every side, as a fraction of the box's larger side
CONTEXT = 192  # width of the whole-frame thumbnail
BAND = 30  # height of the label band above each row
MAX_FACES = 12  # rows of faces on a sheet at most: a crowd would make a sheet no one scrolls through
GAP = 6
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.6
LAYOUT_KEY = "facepipe_sheet"
BACKGROUND = 255
RED = (0, 0, 200)
KEPT_TINT = (255, 80, 200)  # BGR: the kept pixels in the mask crop


@dataclass
class SheetFace:
    """One swapped face of one frame: the person it belongs to and its box in the frame."""

    frame: int  # video frame, from 1
    person: int
    box: tuple[float, float, float, float]  # x1, y1, x2, y2


def face_region(box, shape, margin: float = MARGIN) -> tuple[int, int, int]:
    """(x, y, side) of the square around a face box with a margin on every side (a fraction of the
    box's larger side); it may reach past the frame's edges (crop_face pads there), so the face
    always sits at the centre."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1, 8.0) * (1 + 2 * margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return int(round(cx - side / 2)), int(round(cy - side / 2)), max(1, int(round(side)))


def crop_face(img: np.ndarray, region: tuple[int, int, int]) -> np.ndarray:
    """The square region of the frame, padded with grey past its edges, scaled to CROP x CROP."""
    x, y, side = region
    h, w = img.shape[:2]
    pad = max(0, -x, -y, x + side - w, y + side - h)
    if pad:
        # Grey past a frame's edges; nothing past a map's (the masks' kept map: nothing kept there).
        outside = (128, 128, 128) if img.ndim == 3 else 0
        img = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=outside)
    square = img[y + pad:y + pad + side, x + pad:x + pad + side]
    interpolation = cv2.INTER_CUBIC if side < CROP else cv2.INTER_AREA
    return cv2.resize(square, (CROP, CROP), interpolation=interpolation)


def context_thumbnail(img: np.ndarray, boxes: list[tuple[float, float, float, float]], marked: int
                      ) -> tuple[np.ndarray, float]:
    """The whole frame at CONTEXT px wide (never taller than CROP), the row's face boxed in red and
    the frame's other swapped faces in grey; and its scale."""
    h, w = img.shape[:2]
    scale = min(CONTEXT / w, CROP / h)
    thumb = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        colour = RED if i == marked else (160, 160, 160)
        cv2.rectangle(thumb, (round(x1 * scale), round(y1 * scale)), (round(x2 * scale), round(y2 * scale)),
                      colour, 2 if i == marked else 1)
    return thumb, scale


def frame_text(frame: int, fps: float) -> str:
    """A frame and, in a video, its time (as the cast sheet writes it)."""

    return f"frame {frame}" + (f" ({timestamp(frame, fps)})" if fps else "")


def row_label(face: SheetFace, fps: float) -> str:
    """What a row's band says first: whose face, which frame, when."""
    return f"person {face.person}, {frame_text(face.frame, fps)}"


def draw_band(width: int, texts: list[tuple[int, str]]) -> np.ndarray:
    """A white band of width px with each (x, text) written at x."""
    band = np.full((BAND, width, 3), BACKGROUND, np.uint8)
    for x, text in texts:
        cv2.putText(band, text, (x, BAND - 9), FONT, FONT_SCALE, (0, 0, 0), 1, cv2.LINE_AA)
    return band


MASK_TEXT = "masks: kept tinted"


def band_texts(label: str, with_masks: bool = False) -> list[tuple[int, str]]:
    """Where each text of a row's band goes: the label from the left, 'before', 'after' (and, on a
    sheet with the masks' view, MASK_TEXT) at the right ends of their crops."""
    def right_aligned(right: int, text: str) -> tuple[int, str]:
        return right - cv2.getTextSize(text, FONT, FONT_SCALE, 1)[0][0] - 6, text

    before_x, after_x = CONTEXT + GAP, CONTEXT + 2 * GAP + CROP
    texts = [(4, label), right_aligned(before_x + CROP, "before"), right_aligned(after_x + CROP, "after")]
    if with_masks:
        texts.append(right_aligned(after_x + GAP + 2 * CROP, MASK_TEXT))
    return texts


def kept_faces(frames: list[tuple], limit: int = MAX_FACES) -> list[list[SheetFace]]:
    """Each frame's faces that get a row, ``limit`` in all at most: every person's first face
    first (so each swapped person is on the sheet), then the others in frame order."""
    keep, persons, count = set(), set(), 0
    for pass_ in ("first of each person", "the rest"):
        for f, (_, _, _, faces) in enumerate(frames):
            for i, face in enumerate(faces):
                new_person = face.person not in persons
                if count < limit and (f, i) not in keep and (new_person or pass_ == "the rest"):
                    keep.add((f, i))
                    persons.add(face.person)
                    count += 1
    return [[face for i, face in enumerate(faces) if (f, i) in keep] for f, (_, _, _, faces) in enumerate(frames)]


def kept_map(patches: list, shape: tuple[int, int]) -> np.ndarray | None:
    """Where a frame's face patches keep the target's own pixels (their paste masks,
    facepipe.media.patches.Patch.mask), as a float32 map of the frame (1 = kept); None when none does."""

    kept = None
    for patch in patches:
        if patch.mask is None:
            continue
        held = 255 - patch.mask
        if patch.kind != "pixels":
            # An aligned crop's own paste mask leaves out its border (insightface's erodes the
            # square by a tenth of its side): only what the mask keeps inside it was protected.
            side = held.shape[0]
            inner = np.zeros_like(held)
            edge = side // 10
            inner[edge:side - edge, edge:side - edge] = held[edge:side - edge, edge:side - edge]
            held = inner
        warped = cv2.warpAffine(held, patch_to_frame(patch), (shape[1], shape[0]),
                                flags=cv2.INTER_LINEAR, borderValue=0).astype(np.float32) / 255.0
        kept = warped if kept is None else np.maximum(kept, warped)
    return kept


def mask_view(after_crop: np.ndarray, kept_crop: np.ndarray) -> np.ndarray:
    """The after crop with the kept pixels tinted and outlined."""
    weight = np.clip(kept_crop, 0, 1)[..., None] * 0.55
    view = (after_crop.astype(np.float32) * (1 - weight) + np.array(KEPT_TINT, np.float32) * weight)
    view = np.clip(view, 0, 255).astype(np.uint8)
    contours, _ = cv2.findContours((kept_crop > 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(view, contours, -1, KEPT_TINT, 1, cv2.LINE_AA)
    return view


def face_sheet(frames: list[tuple], fps: float) -> tuple[np.ndarray, dict]:
    """The sheet of (frame, before, after, its swapped faces[, kept_map]) and its layout (see
    LAYOUT_KEY). With a kept map on any frame, every face row gets a third crop: the masks' view.

    A frame with no swapped face gets one row with only its thumbnail and a note, so a sheet
    never hides a chosen frame. A crowd is shown as MAX_FACES rows at most (kept_faces); the
    layout counts the faces left out, and the sheet's last band says so."""
    masks = [f[4] if len(f) > 4 else None for f in frames]
    frames = [f[:4] for f in frames]
    with_masks = any(m is not None for m in masks)
    width = CONTEXT + (3 if with_masks else 2) * (GAP + CROP)
    rows, layout_rows = [], []
    top = 0
    kept = kept_faces(frames)
    left_out = sum(len(f[3]) for f in frames) - sum(len(k) for k in kept)
    for (frame, before, after, all_faces), faces, mask in zip(frames, kept, masks):
        if all_faces and not faces:
            continue  # a frame whose faces are all left out
        if not faces:
            label = f"{frame_text(frame, fps)}: no face swapped"
            thumb, _ = context_thumbnail(after, [], -1)
            body = np.full((thumb.shape[0], width, 3), BACKGROUND, np.uint8)
            body[:, :thumb.shape[1]] = thumb
            rows += [draw_band(width, [(4, label)]), body]
            layout_rows.append({"frame": frame, "person": None, "label": label, "top": top})
            top += BAND + body.shape[0]
            continue
        boxes = [f.box for f in all_faces]
        for face in faces:
            label = row_label(face, fps)
            region = face_region(face.box, before.shape)
            thumb, _ = context_thumbnail(before, boxes, all_faces.index(face))
            body = np.full((CROP, width, 3), BACKGROUND, np.uint8)
            body[:thumb.shape[0], :thumb.shape[1]] = thumb
            before_x, after_x = CONTEXT + GAP, CONTEXT + 2 * GAP + CROP
            body[:, before_x:before_x + CROP] = crop_face(before, region)
            body[:, after_x:after_x + CROP] = crop_face(after, region)
            texts = band_texts(label, with_masks)
            y = top + BAND
            entry = {
                "frame": frame, "person": face.person, "label": label, "top": top,
                "box": [round(float(v), 1) for v in face.box], "region": list(region),
                "scale": round(CROP / region[2], 3),
                "before": [before_x, y, CROP, CROP], "after": [after_x, y, CROP, CROP],
                "context": [0, y, thumb.shape[1], thumb.shape[0]],
            }
            if with_masks:
                mask_x = after_x + GAP + CROP
                kept_crop = crop_face(np.zeros(before.shape[:2], np.float32) if mask is None else mask, region)
                body[:, mask_x:mask_x + CROP] = mask_view(crop_face(after, region), kept_crop)
                entry["mask"] = [mask_x, y, CROP, CROP]
                entry["kept_share"] = round(float((kept_crop > 0.5).mean()), 4)
            rows += [draw_band(width, texts), body]
            layout_rows.append(entry)
            top += BAND + CROP
    if left_out:
        rows.append(draw_band(width, [(4, f"{left_out} more swapped face(s) of these frames not shown")]))
    if not rows:
        rows = [draw_band(width, [(4, "no frame to show")])]
    sheet = np.vstack(rows)
    return sheet, {"crop": CROP, "band": BAND, "rows": layout_rows, "left_out": left_out}


def write_face_sheet(frames, fps: float, out: str | Path) -> dict:
    """Write the sheet as a PNG labelled AI-generated (facepipe.media.files), its layout in a text chunk."""

    sheet, layout = face_sheet(frames, fps)
    write_labelled_png(sheet, out, texts={LAYOUT_KEY: json.dumps(layout)})
    return layout


def read_layout(path: str | Path) -> dict:
    """The layout a sheet was written with (write_face_sheet)."""
    # lazy: Pillow is slow to import, and only this path needs it
    from PIL import Image

    with Image.open(path) as img:
        return json.loads(img.text[LAYOUT_KEY])
