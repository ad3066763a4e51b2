"""Face detection over one segment: the backend's analyzer on each working frame, and the faces
table it writes.

The faces table (one row per detected face; its types: facepipe.media.tables.FACES_SCHEMA) is the
contract between detection and the later stages: frame (1-based within the segment), face (index
in the frame), box x1..y2, det score, 5 keypoints, the identity embedding on sampled frames (512-D
ArcFace or 128-D dlib, by backend), the offline backend's mesh points, and the face's crop for
the swapper, cut out here so that no later stage decodes the video for it.
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import cv2
import numpy as np

from facepipe.faces.boxes import box_iou
from facepipe.faces.shots import frame_thumbnail, shot_difference, thumbnail_hsv
from facepipe.media.i420 import chroma_aligned, region_i420
from facepipe.media.patches import check_matrix, decode_image, encode_image
from facepipe.media.tables import FACES_SCHEMA, FRAMES_SCHEMA, read_table, write_table
from facepipe.media.video import planned_starts
from facepipe.models.alignment import alignment_matrix
from facepipe.models.classic_swap import hull_bbox
from facepipe.progress import Progress

if TYPE_CHECKING:  # pandas only for the callers that want a DataFrame: detection jobs start 0.2 s sooner
    import pandas as pd

log = logging.getLogger(__name__)

# landmarks: the offline backend's 468 mesh points (flattened; facepipe.models.face_mesh), which its swappers
# need; null for the learned backend, and readers must not rely on the column being there.
# crop: the face as the swapper takes it (encode_image), cut out at detection so the swap stage never
# decodes the video: the aligned crop and its matrix (crop_matrix, frame -> crop) for the
# learned swapper, or the landmarks' rectangle at (crop_x, crop_y) for the classic one.
FACE_COLUMNS = FACES_SCHEMA.names  # the table's types: facepipe.media.tables


# Crops are kept with a margin around the face, so the swap stage can re-align them to the
# tracked (smoothed, interpolated) keypoints without decoding the video again. A held crop (see
# face_rows) is cut where a face was just before or after a frame where it was missed; the
# wider margin leaves room for the face to move while the detector misses it.
CROP_MARGIN = 0.0625
HOLD_MARGIN = 0.375
# Detection embeds every face on one frame in IDENTITY_EVERY (counted over the whole video,
# so the sample does not depend on how the video is split): enough for tracking and persons,
# at a tenth of the recognizer's cost (dlib's CPU ResNet dominates offline detection).
IDENTITY_EVERY = 10
# Two detections on neighbouring frames are the same face when their boxes overlap this much.
SAME_FACE_IOU = 0.3
# A face is looked for again beside a frame it was found on (face_rows) only where the two frames'
# shot difference (facepipe.faces.shots) is under this: the tracker's default shot_threshold.
REFIND_SHOT_CHANGE = 30.0


def parse_crop_kind(kind: str) -> tuple[str, int]:
    """(template, side) of an aligned crop kind ``aligned:{template}:{side}`` (facepipe.models.
    crop_kind); ("", 0) for ``landmark_box``; ValueError for anything else."""
    if kind == "landmark_box":
        return "", 0
    parts = kind.split(":")
    if len(parts) == 3 and parts[0] == "aligned" and parts[2].isdigit() and int(parts[2]) > 0:
        # lazy: imported only on the path that needs it
        from facepipe.models.alignment import TEMPLATES

        if parts[1] in TEMPLATES:
            return parts[1], int(parts[2])
    raise ValueError(f"unknown crop kind {kind!r}; expected aligned:TEMPLATE:SIDE or landmark_box")


def face_crop(frame, face: dict, kind: str, margin: float = CROP_MARGIN) -> dict:
    """The crop columns of one face (see FACE_COLUMNS) from its working frame (WorkFrame).

    aligned:TEMPLATE:SIDE: the crop the swapper takes (the face's keypoints on TEMPLATE, SIDE px
    square), on a canvas `margin` wider on every side; crop_matrix maps the frame to the canvas.
    landmark_box: the frame's pixels around the landmarks' rectangle, `margin` wider (a video
    frame's widened to even corners and kept as I420), at (crop_x, crop_y).
    """

    template, size = parse_crop_kind(kind)
    if template:
        pad = round(size * margin)
        matrix = alignment_matrix(face["kps"], template, size)
        matrix[:, 2] += pad
        return {"crop": encode_image(frame.warp_bgr(matrix, size + 2 * pad)), "crop_x": 0, "crop_y": 0,
                "crop_matrix": matrix.reshape(-1).tolist()}

    x0, y0, x1, y1 = hull_bbox(np.asarray(face["landmarks"]).reshape(-1, 2), frame.shape, margin)
    if frame.is_image:
        return {"crop": encode_image(frame.bgr_rect(x0, y0, x1, y1)), "crop_x": x0, "crop_y": y0, "crop_matrix": None}
    # A video frame's own I420 pixels, widened to whole chroma samples: half the bytes of BGR to
    # write and read, and only the faces swapped are ever converted (decode_image).
    x0, y0, x1, y1 = chroma_aligned((x0, y0, x1, y1), frame.shape[1], frame.shape[0])
    return {"crop": encode_image(region_i420(frame.planes(), (x0, y0, x1, y1))), "crop_x": x0, "crop_y": y0,
            "crop_matrix": None}


def _matched(face: dict, faces: list[dict]) -> bool:
    return any(box_iou(face["box"], other["box"]) >= SAME_FACE_IOU for other in faces)


def look_ahead(analyzer, crop: str | None, hold_frames: int) -> int:
    """How many frames after its segment a detection job looks at (face_rows' last): as far as a
    face found there is looked for, or held, back onto the segment's own frames. A face the offline
    detector finds a few frames into the next segment (its mesh reads it from the frames before) is
    then found on this segment's last frames too, as in a video of one segment, not missed on
    frames between two segments' detector runs."""
    if not crop or hold_frames <= 0:
        return 0
    return max(hold_frames, getattr(analyzer, "frames_late", 0)) if getattr(analyzer, "refind", None) else hold_frames


def face_rows(analyzer, frames: Iterable, crop: str | None = None, *, first_frame: int = 1,
              hold_frames: int = 0, identity_every: int = IDENTITY_EVERY, last: int | None = None,
              thumbnails: list | None = None, progress=None) -> Iterator[list[dict]]:
    """The faces-table rows of a segment's working frames (facepipe.media.video.WorkFrame, numbered
    from 1), one list per frame; analyzer: FaceAnalyzer or OfflineAnalyzer; crop: the kind of
    face crop to keep for the swap.

    first_frame: the video's frame number (from 1) of the segment's first frame; faces are
    embedded on video frames first_frame + n with n a multiple of identity_every.

    hold_frames: where a face is found on one frame and not on the next (or the other way
    round), it is looked for again on up to this many frames on the side where it is missing, by
    the analyzer's ``refind`` where it has one (the offline mesh: a face coming into the frame or
    leaving it, which the mesh reads before and after the detector finds it), and found there as on
    any frame; frames where it is not get a *held* crop: cut at the face's last (next) known place,
    marked hold=True, held_from = the frame it was found on. The tracker interpolates the face over
    such a gap and swaps it from the held crops, so no stage after this one decodes the video.
    Frames are handed on hold_frames late for this. An analyzer that may find a face coming into
    view some frames late (its ``frames_late``: the offline mesh, which runs its detector on one frame
    in a few) has it looked for back over that many frames where more than hold_frames, and held
    back over hold_frames from the frame it was refound on; frames are handed on as much later.

    last: the segment's last frame, when frames after it come too (look_ahead: the next segment's
    first ones): those are analysed as a video of one segment would be, for the faces they find
    on the frames up to ``last``, and give no rows, thumbnails, embeddings or progress of their own.

    thumbnails: when a list, (frame, frame_thumbnail) is appended for every frame.
    progress: a facepipe.progress.Progress, told of every frame analysed.
    """

    numbers, frames_kept = [], {}
    refind = getattr(analyzer, "refind", None) if crop and hold_frames > 0 else None
    # How far back a face newly found is looked for (the tracker's gap, or as many frames as the
    # analyzer may find a face late), and how many frames are kept for it: held crops reach the
    # tracker's gap back from the frame it was refound on.
    reach = look_ahead(analyzer, crop, hold_frames)
    kept = reach + hold_frames if refind is not None else hold_frames

    def own(number: int) -> bool:
        return last is None or number <= last

    shots: dict[int, np.ndarray] = {}  # the thumbnails of the recent frames (thumbnail_hsv), for refind

    def seen():
        for frame in frames:
            numbers.append(frame.number)
            frames_kept[frame.number] = frame  # until its faces are cropped, just below
            if thumbnails is not None or refind is not None:
                thumbnail = frame_thumbnail(frame)
                if thumbnails is not None and own(frame.number):
                    thumbnails.append((frame.number, thumbnail))
                if refind is not None:
                    shots[frame.number] = thumbnail_hsv(thumbnail)
            yield frame

    def one_shot(a: int, b: int) -> bool:
        """Whether neighbouring frames a and b lie in one shot, for refind: across a cut the mesh
        may read a face of the new shot where the old one was (a blurred face of the new background,
        on the tracking test clip, became a person of its own)."""
        return a in shots and b in shots and shot_difference(shots[a], shots[b]) < REFIND_SHOT_CHANGE

    def embeds(number: int) -> bool:
        return own(number) and identity_every > 0 and (first_frame + number - 2) % identity_every == 0

    # Every analyzer takes (working frame, embed?) pairs: the learned one works on the frames' YUV
    # planes, the offline one spreads them over processes itself.
    per_frame = analyzer.analyze_frames(((frame, embeds(frame.number)) for frame in seen()), first_frame=first_frame)

    # Recent frames: (number, frame, faces, rows), handed on once hold_frames newer ones follow.
    recent: deque = deque()
    following: list[tuple[dict, int, int]] = []  # (face, frame it was last found on, frames left)
    previous: list[dict] = []
    counts = {"found": 0, "with_faces": 0, "held": 0, "refound": 0}

    def handed_on(entry) -> list[dict]:
        counts["with_faces"] += any(not row["hold"] for row in entry[3])
        shots.pop(entry[0], None)  # refind compares only the recent frames, all after it
        return entry[3]

    def found(entry, face: dict) -> None:
        """A face refound on an entry's frame, added as found there."""
        number, frame, faces, rows = entry
        row = _row(number, len(rows), face)
        if crop and own(number):
            row.update(face_crop(frame, face, crop))
        rows.append(row)
        faces.append(face)
        counts["found"] += own(number)
        counts["refound"] += own(number)

    def hold(entry, face: dict, found_on: int) -> None:
        number, frame, _, rows = entry
        row = _row(number, len(rows), face, hold=True, held_from=found_on)
        if crop and own(number):
            row.update(face_crop(frame, face, crop, HOLD_MARGIN))
        rows.append(row)
        counts["held"] += own(number)

    for i, faces in enumerate(per_frame):
        number = numbers[i]
        frame = frames_kept.pop(number, None)
        rows = []
        for j, face in enumerate(faces):
            row = _row(number, j, face)
            if crop and own(number):
                row.update(face_crop(frame, face, crop))
            rows.append(row)
        counts["found"] += len(rows) if own(number) else 0
        if progress is not None and own(number):
            progress.update()
        entry = (number, frame, faces, rows)
        if crop and hold_frames > 0:
            # Faces of the last frame not found on this one: looked for again here, else held
            # forward for hold_frames frames.
            lost = [f for f in previous if not _matched(f, faces)]
            if lost and refind is not None and one_shot(number - 1, number):
                for f in lost:
                    again = refind(frame, f)
                    if again is not None and not _matched(again, faces):
                        found(entry, again)
            following = [(f, at, left) for f, at, left in following if not _matched(f, faces)]
            following += [(f, number - 1, hold_frames) for f in previous if not _matched(f, faces)]
            for f, at, left in following:
                hold(entry, f, at)
            following = [(f, at, left - 1) for f, at, left in following if left > 1]
            # Faces found here but not on the last frame: looked for again on the frames before it,
            # from the nearest on, while they are read there; held back over the rest.
            for face in faces:
                nearest, found_on = face, number
                for back in reversed(recent):
                    if _matched(nearest, back[2]):
                        break
                    beside = (refind is not None and found_on == back[0] + 1 and back[0] >= number - reach
                              and one_shot(back[0], found_on))
                    again = refind(back[1], nearest) if beside else None
                    if again is not None and not _matched(again, back[2]):
                        found(back, again)
                        nearest, found_on = again, back[0]
                    elif back[0] >= found_on - hold_frames:
                        hold(back, nearest, found_on)
                    else:
                        break
            previous = faces
        recent.append(entry)
        while len(recent) > kept:
            handed = recent.popleft()
            if own(handed[0]):
                yield handed_on(handed)
    while recent:
        handed = recent.popleft()
        if own(handed[0]):
            yield handed_on(handed)
    analysed = sum(1 for number in numbers if own(number))
    log.info("%d faces in %d frames (%d frames without a face; %d faces refound beside a frame they were found "
             "on); %d held crops for frames where a face may have been missed%s", counts["found"], analysed,
             analysed - counts["with_faces"], counts["refound"], counts["held"],
             f"; {len(numbers) - analysed} frames after the segment looked at for them"
             if len(numbers) > analysed else "")


def _row(number: int, index: int, face: dict, *, hold: bool = False, held_from: int = 0) -> dict:
    x1, y1, x2, y2 = (float(v) for v in face["box"])
    # The list columns as flat arrays: the table writer takes them as they are (the same values);
    # as Python lists, the offline mesh's 936 numbers a face took 40 times as long to write.
    return {"frame": number, "face": index, "x1": x1, "y1": y1, "x2": x2, "y2": y2,
            "score": 0.0 if hold else face["score"], "kps": np.asarray(face["kps"]).reshape(-1),
            # None on frames outside the identity sample, and on held crops
            "embedding": None if hold or face["embedding"] is None else np.asarray(face["embedding"]).reshape(-1),
            "landmarks": (np.asarray(face["landmarks"]).reshape(-1) if face.get("landmarks") is not None else None),
            "hold": hold, "held_from": held_from,
            "crop": None, "crop_x": 0, "crop_y": 0, "crop_matrix": None}


def detect_frames(analyzer, frames: Iterable, crop: str | None = None, **kwargs) -> pd.DataFrame:
    """face_rows as one table."""
    import pandas as pd

    return pd.DataFrame([row for rows in face_rows(analyzer, frames, crop, **kwargs) for row in rows],
                        columns=FACE_COLUMNS)


def write_faces(rows, path: str | Path) -> None:
    """A faces table, from a DataFrame or from rows given frame by frame (face_rows), written
    as it comes (facepipe.media.tables)."""

    if hasattr(rows, "to_dict"):  # a DataFrame (pandas is not imported for the rows detection gives)
        rows = [rows.to_dict("records")]
    write_table(rows, path, FACES_SCHEMA)


def read_faces(path: str | Path) -> pd.DataFrame:
    """A whole faces table, verified (facepipe.media.integrity: a damaged one is removed and reported)."""

    return read_table(path)


class OutsideCrop(ValueError):
    """The tracked face does not fit the crop detection kept for it."""


def swap_input(row, kps, landmarks=None, kind: str = "",
               frame_size: tuple[int, int] | None = None) -> tuple[np.ndarray, dict]:
    """The crop the swapper takes for a face, from the crop detection kept (a faces-table row),
    re-aligned to the tracked keypoints ``kps`` (or, landmark_box, cut around ``landmarks``).
    ``kind``: the crop kind detection kept (facepipe.models.crop_kind). ``frame_size``: the
    working frames' (width, height), where known: landmarks past the frame's edge (a face partly
    out of the frame) then do not count as outside the crop, which cannot reach past the edge.

    Returns the crop and the arguments the swapper needs with it: ``matrix`` (frame -> aligned
    crop) for a learned swapper; ``x``, ``y`` and ``landmarks`` for the classic one.
    ValueError for a crop that is not what detection writes, so a damaged crop never reaches
    the swapper (which would quietly resize it), or a face that moved out of its held crop.
    """

    if row.crop is None:
        raise ValueError("it has no crop")
    crop = decode_image(row.crop)
    kps = np.asarray(kps, np.float64)
    if kps.size != 10 or not np.isfinite(kps).all():
        raise ValueError("its keypoints are not 10 finite numbers")
    template, size = parse_crop_kind(kind)
    if row.crop_matrix is not None:
        if not template:
            raise ValueError(f"it has an aligned crop, but the swap takes {kind}")
        stored = check_matrix(row.crop_matrix, "crop matrix")
        if crop.shape[0] != crop.shape[1] or crop.shape[0] < size:
            raise ValueError(f"its aligned crop is {crop.shape[1]}x{crop.shape[0]}, not a square of {size} px or more")
        matrix = alignment_matrix(kps, template, size)
        # frame -> stored canvas -> aligned crop: the canvas point p is the frame point inv(stored) p.
        to_crop = matrix @ np.vstack([cv2.invertAffineTransform(stored), [0, 0, 1]])
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64)
        inside = corners @ np.vstack([cv2.invertAffineTransform(to_crop), [0, 0, 1]]).T
        if inside[:, :2].min() < -1 or inside[:, :2].max() > crop.shape[0] + 1:
            raise OutsideCrop("the tracked face reaches outside the crop detection kept")
        whole_pixels = np.allclose(to_crop[:, 2], np.round(to_crop[:, 2]), atol=1e-6)
        if np.allclose(to_crop[:, :2], np.eye(2), atol=1e-9) and whole_pixels:
            x, y = -int(round(to_crop[0, 2])), -int(round(to_crop[1, 2]))  # a whole-pixel shift: copied exactly
            aligned = crop[y:y + size, x:x + size]
        else:
            aligned = cv2.warpAffine(crop, to_crop, (size, size), borderValue=0.0)
        return np.ascontiguousarray(aligned), {"matrix": matrix}
    if template:
        raise ValueError(f"it has no crop matrix, but the swap takes an aligned crop ({kind})")
    # landmark_box: the classic swapper works on the frame's own pixels around the landmarks.
    landmarks = np.asarray(row.landmarks if landmarks is None else landmarks, np.float64)
    # 68 points (dlib's layout) or the face mesh's 468 (facepipe.models.face_mesh), flattened.
    if landmarks.size not in (136, 936) or not np.isfinite(landmarks).all():
        raise ValueError("its crop has no matrix and no 68 or 468 finite landmarks")
    if row.crop_x < 0 or row.crop_y < 0:
        raise ValueError(f"its crop corner ({row.crop_x}, {row.crop_y}) is outside the frame")
    lm = landmarks.reshape(-1, 2)
    if frame_size is not None:
        lm = np.clip(lm, 0, frame_size)
    lm = lm - (row.crop_x, row.crop_y)
    h, w = crop.shape[:2]
    if lm.min() < 0 or (lm[:, 0] > w).any() or (lm[:, 1] > h).any():
        raise OutsideCrop("the tracked face reaches outside the crop detection kept")
    return crop, {"x": int(row.crop_x), "y": int(row.crop_y), "landmarks": landmarks.reshape(-1)}


def pick_face(faces: list[dict], image: str | Path, face_index: int = -1) -> dict:
    """The face of a source/reference image to use: the largest, unless an index is given."""
    # lazy: its module loads ONNX Runtime, which the rest of this module's users do not need (the
    # workflow's main process reads IDENTITY_EVERY here for every run, and tracking its tables)
    from facepipe.models.face_analyzer import FaceError

    if not faces:
        raise FaceError(f"no face found in image {str(image)!r}; use a photo with a clearly visible face")
    if face_index is not None and face_index >= 0:
        if face_index >= len(faces):
            raise FaceError(f"image {str(image)!r} has {len(faces)} face(s); source_face={face_index} does not exist "
                            f"(faces are numbered from 0, largest first)")
        log.info("image %s: %d faces, using face %d as asked", image, len(faces), face_index)
        return faces[face_index]
    if len(faces) > 1:
        log.warning("image %s has %d faces: using the largest (set source_face=N to choose; 0 = largest)",
                    image, len(faces))
    return faces[0]


def detect_segment(analyzer, frames: Iterable, manifest: dict, segment: str, faces_out: str | Path,
                   frames_out: str | Path, *, crop: str, hold_frames: int,
                   identity_every: int = IDENTITY_EVERY) -> None:
    """Detection of one segment: its faces table (face_rows, written as it comes) and its frames
    table (a thumbnail per frame, facepipe.faces.tracking finds shot changes from it). ``frames``
    may go on past the segment (look_ahead)."""

    first = planned_starts(manifest)[segment] + 1
    thumbnails: list = []
    with Progress(manifest["segments"][segment], f"detect_faces {segment}", log) as progress:
        write_faces(face_rows(analyzer, frames, crop, first_frame=first, hold_frames=hold_frames,
                              identity_every=identity_every, last=manifest["segments"][segment],
                              thumbnails=thumbnails, progress=progress), faces_out)
    write_table([[{"frame": n, "thumb": t} for n, t in thumbnails]], frames_out, FRAMES_SCHEMA)
