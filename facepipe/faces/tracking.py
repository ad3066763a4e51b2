"""Faces followed through the whole video: tracks, the gaps in them, and the persons they belong to.

Detection decides frame by frame; this stage, run once per job on the faces tables of all its
segments (tables only: no video is decoded), makes the decisions that need the whole video:

- **Shots.** A shot change is where a frame's thumbnail differs from the one before by more than
  ``shot_threshold`` (the mean absolute difference of the HSV channels on a 0-255 scale, as
  PySceneDetect's content detector measures it, with hue as an angle weighed by saturation:
  facepipe.faces.shots). No track crosses a shot change.
- **Tracks.** Detections on successive frames are linked by an optimal assignment
  (scipy's linear_sum_assignment) on box overlap with the track's predicted box, keypoint
  distance and, on frames where detection sampled one, identity distance. A track survives up
  to ``track_gap`` frames without a detection. Segment boundaries are invisible here.
- **Gaps.** Inside a track, frames where the face was missed get interpolated boxes, keypoints
  and landmarks, and the crop detection held for that frame (facepipe.faces.detection.face_rows).
- **Smoothing.** Keypoints and landmarks are smoothed along each track with a Gaussian of
  ``smoothing`` frames (0 = off); centred, so the face does not lag behind the head, and a local
  line at the track's ends, so a moving face's first and last frames do not lag either.
- **Persons.** Tracks are grouped by identity (SciPy's average-linkage clustering of their mean
  embeddings, cut at the backend's same-person distance); two tracks seen on one frame are never
  one person. A track
  too short to hold an identity sample joins the track it continues in place (same shot).
  Persons are numbered from 1 in order of first appearance: the cast ids.
"""

from __future__ import annotations

import bisect
import logging
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import groupby
from pathlib import Path

import cv2
import numpy as np

from facepipe.faces.boxes import box_iou
from facepipe.faces.shots import shot_changes
from facepipe.media.integrity import reject, write_sealed_json
from facepipe.media.tables import TRACKS_SCHEMA, TableWriter, open_table, rows_of
from facepipe.media.video import planned_starts
from facepipe.models.metrics import Metric
from facepipe.models.metrics import metric as as_metric

log = logging.getLogger(__name__)

# Columns of the faces tables the tracker reads (never the crops).
DETECTION_COLUMNS = ["frame", "face", "x1", "y1", "x2", "y2", "score", "kps", "embedding", "landmarks",
                     "hold", "held_from"]
# A face the tracker reads: a faces table's row, its frame the video's (from 1), with its segment and
# the frame within that.
Detection = namedtuple("Detection", [*DETECTION_COLUMNS, "segment", "seg_frame"])
# Linking gates: a detection continues a track when its box overlaps the track's predicted box
# this much, or its centre is this close (in face sizes): a face moving fast still links.
LINK_IOU = 0.1
LINK_CENTRE = 0.6
# A held crop serves an interpolated face whose box it overlaps this much.
HOLD_IOU = 0.3
# A track without an identity sample joins a person's track ending or starting this close in time.
IDENTITY_REACH = 10
# The distance given to two tracks seen on the same frame: larger than any average-linkage
# height that a group could bring under the threshold.
APART = 1e9
# How far all distances must lie from the persons' cut for it to be decided without SciPy
# (_average_linkage_groups): far above the rounding of a mean of distances of about 1.
_CUT_MARGIN = 1e-9
# Identity samples kept per person (evenly spread over their frames) for reference matching.
IDENTITY_SAMPLES = 32


@dataclass
class Segment:
    name: str
    start: int  # the video frame number (from 1) of the segment's first frame, minus one
    faces: Path
    frames: Path


@dataclass
class Track:
    id: int
    shot: int
    frames: list[int] = field(default_factory=list)
    rows: list = field(default_factory=list)  # detection rows (Detection)
    embeddings: list[np.ndarray] = field(default_factory=list)
    person: int = 0

    @property
    def last(self):
        return self.rows[-1]

    def predicted_box(self, frame: int) -> np.ndarray:
        box = _box(self.rows[-1])
        if len(self.rows) > 1:
            step = self.frames[-1] - self.frames[-2]
            velocity = (box - _box(self.rows[-2])) / max(step, 1)
            box = box + velocity * (frame - self.frames[-1])
        return box


def _box(row) -> np.ndarray:
    return np.array([row.x1, row.y1, row.x2, row.y2], np.float64)


def distance(a: np.ndarray, b: np.ndarray, metric: Metric | str) -> float:
    """Identity distance in a backend's metric (cosine for ArcFace, Euclidean for dlib)."""
    return as_metric(metric).distance(a, b)


# ---------------------------------------------------------------------------------------------
# Reading the segments


# Segments' tables read at a time (read_detections).
READ_THREADS = 2


def read_detections(segments: list[Segment]) -> tuple[list[Detection], dict[int, bytes]]:
    """Every segment's faces (video frame numbers added) and frame thumbnails, verified; without
    pandas (0.2 s to import, on the path of every run). Two segments are read at a time: verifying
    and decompressing a table leave Python's lock free, and the stage runs alone on the run's path
    (the tracking of the offline benchmark's two 100 MB tables: 0.92 s instead of 1.10 s)."""

    faces, thumbs = [], {}
    with ThreadPoolExecutor(READ_THREADS) as pool:
        for seg_faces, seg_thumbs in pool.map(_read_segment, segments):
            faces += seg_faces
            thumbs.update(seg_thumbs)
    return faces, thumbs


def _read_segment(seg: Segment) -> tuple[list[Detection], dict[int, bytes]]:
    try:
        rows = rows_of(open_table(seg.faces).read(columns=DETECTION_COLUMNS))
    except (OSError, ValueError, KeyError) as exc:
        reject(seg.faces, f"it cannot be read as a faces table ({exc})")
    faces = [Detection(*(getattr(row, column) for column in DETECTION_COLUMNS), segment=seg.name,
                       seg_frame=row.frame)._replace(frame=row.frame + seg.start) for row in rows]
    frames = open_table(seg.frames).read()
    return faces, dict(zip((f + seg.start for f in frames.column("frame").to_pylist()),
                           frames.column("thumb").to_pylist()))


# ---------------------------------------------------------------------------------------------
# Linking


def link(detections: list[Detection], cuts: list[int], *, track_gap: int, metric: Metric | str) -> list[Track]:
    """Detections (not held crops) linked into tracks, frame by frame."""

    tracks: list[Track] = []
    active: list[Track] = []
    metric = as_metric(metric)
    far = metric.link_distance
    ordered = sorted(detections, key=lambda row: (row.frame, row.face))
    for frame, group in groupby(ordered, key=lambda row: row.frame):
        shot = bisect.bisect_right(cuts, frame)
        active = [t for t in active if t.shot == shot and frame - t.frames[-1] <= track_gap + 1]
        rows = list(group)
        cost = _link_costs(active, rows, frame, metric, far)
        taken = set()
        for i, j in _assignment(cost):
            _extend(active[i], frame, rows[j])
            taken.add(j)
        for j, row in enumerate(rows):
            if j not in taken:
                track = Track(id=len(tracks) + 1, shot=shot)
                _extend(track, frame, row)
                tracks.append(track)
                active.append(track)
    return tracks


def _link_costs(active: list[Track], rows: list, frame: int, metric: Metric | str, far: float) -> np.ndarray:
    """Cost of continuing each active track with each detection of the frame (inf: not allowed):
    1 - overlap with the track's predicted box, plus the centre distance and the keypoints' mean
    move (both in face sizes), plus the identity distance where both have one. All pairs at once,
    so a frame full of faces costs array operations, not a Python loop per pair."""
    if not active or not rows:
        return np.full((len(active), len(rows)), np.inf)
    if len(active) == 1 and len(rows) == 1:
        # One face followed on one frame, the usual case: the same sums on Python floats cost a
        # tenth of the array operations' set-up.
        return np.array([[_link_cost(active[0], rows[0], frame, metric, far)]])
    pred = np.stack([t.predicted_box(frame) for t in active])
    boxes = np.stack([_box(r) for r in rows])
    pr, bx = pred[:, None], boxes[None, :]  # every predicted box against every detected one
    ix = np.clip(np.minimum(pr[..., 2], bx[..., 2]) - np.maximum(pr[..., 0], bx[..., 0]), 0, None)
    iy = np.clip(np.minimum(pr[..., 3], bx[..., 3]) - np.maximum(pr[..., 1], bx[..., 1]), 0, None)
    area = lambda b: np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)  # noqa: E731
    union = area(pred)[:, None] + area(boxes)[None, :] - ix * iy
    iou = np.where(union > 0, ix * iy / np.where(union > 0, union, 1), 0.0)
    size = np.sqrt(np.maximum((pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1]), 1.0))[:, None]
    centre = np.linalg.norm((pred[:, None, :2] + pred[:, None, 2:]) / 2 - (boxes[None, :, :2] + boxes[None, :, 2:]) / 2,
                            axis=2) / size
    last_kps = np.stack([np.asarray(t.last.kps, np.float64) for t in active])
    kps = np.stack([np.asarray(r.kps, np.float64) for r in rows])
    move = np.abs(kps[None] - last_kps[:, None]).mean(axis=2) / size
    cost = (1.0 - iou) + centre + move
    allowed = (iou >= LINK_IOU) | (centre <= LINK_CENTRE)
    with_id = [i for i, t in enumerate(active) if t.embeddings]
    rows_id = [j for j, r in enumerate(rows) if r.embedding is not None]
    if with_id and rows_id:
        d = metric.distances(np.stack([np.asarray(active[i].embeddings[-1], np.float64) for i in with_id]),
                      np.stack([np.asarray(rows[j].embedding, np.float64) for j in rows_id]))
        block = np.ix_(with_id, rows_id)
        cost[block] += d
        allowed[block] &= d <= far
    return np.where(allowed, cost, np.inf)


def _link_cost(track: Track, row, frame: int, metric: Metric | str, far: float) -> float:
    """_link_costs for one track and one detection."""
    px1, py1, px2, py2 = (float(v) for v in track.predicted_box(frame))
    x1, y1, x2, y2 = float(row.x1), float(row.y1), float(row.x2), float(row.y2)
    inter = max(0.0, min(px2, x2) - max(px1, x1)) * max(0.0, min(py2, y2) - max(py1, y1))
    union = max(0.0, px2 - px1) * max(0.0, py2 - py1) + max(0.0, x2 - x1) * max(0.0, y2 - y1) - inter
    iou = inter / union if union > 0 else 0.0
    size = max((px2 - px1) * (py2 - py1), 1.0) ** 0.5
    centre = float(np.hypot((px1 + px2) / 2 - (x1 + x2) / 2, (py1 + py2) / 2 - (y1 + y2) / 2)) / size
    move = float(np.abs(np.asarray(row.kps, np.float64) - np.asarray(track.last.kps, np.float64)).mean()) / size
    cost = (1.0 - iou) + centre + move
    allowed = iou >= LINK_IOU or centre <= LINK_CENTRE
    if track.embeddings and row.embedding is not None:
        d = distance(track.embeddings[-1], row.embedding, metric)
        cost += d
        allowed = allowed and d <= far
    return cost if allowed else np.inf


def _assignment(cost: np.ndarray) -> list[tuple[int, int]]:
    """The pairs (track, detection) of least total cost among the finite ones. Where no track
    and no detection has a choice (the usual case), that is every finite pair, found without
    the solver."""
    finite = np.isfinite(cost)
    if not finite.any():
        return []
    if (finite.sum(axis=0) <= 1).all() and (finite.sum(axis=1) <= 1).all():
        return [(int(i), int(j)) for i, j in zip(*np.nonzero(finite))]
    # lazy: SciPy is slow to import, and only this path needs it
    from scipy.optimize import linear_sum_assignment

    pairs = zip(*linear_sum_assignment(np.where(finite, cost, 1e9)))
    return [(int(i), int(j)) for i, j in pairs if finite[i, j]]


def _extend(track: Track, frame: int, row) -> None:
    track.frames.append(frame)
    track.rows.append(row)
    if row.embedding is not None:
        track.embeddings.append(np.asarray(row.embedding, np.float64))


# ---------------------------------------------------------------------------------------------
# Persons


def group_persons(tracks: list[Track], *, metric: Metric | str, threshold: float | None = None,
                  reach: int = 10) -> None:
    """Set each track's person: average-linkage clustering (SciPy) of the tracks' identities, cut
    at the same-person distance, never joining two tracks seen on the same frame. A track too
    short to hold an identity sample then joins the person whose track ends (or starts) at the
    same place within `reach` frames in the same shot."""
    metric = as_metric(metric)
    threshold = metric.person_distance if threshold is None else threshold
    labels = {id(t): i for i, t in enumerate(tracks)}  # every track on its own, to start with
    known = [t for t in tracks if t.embeddings]
    if len(known) > 1:
        ids = np.stack([metric.identity(t.embeddings) for t in known])
        square = metric.distances(ids, ids)
        square = (square + square.T) / 2  # exactly symmetric, as linkage needs
        # Two tracks on one frame are two people: a distance no average of a group can bring
        # under the threshold keeps them (and any groups holding them) apart.
        by_frame: dict[int, list[int]] = {}
        for i, t in enumerate(known):
            for f in t.frames:
                by_frame.setdefault(f, []).append(i)
        for members in by_frame.values():
            if len(members) > 1:
                square[np.ix_(members, members)] = APART
        np.fill_diagonal(square, 0.0)
        groups = _average_linkage_groups(square, threshold)
        for t, g in zip(known, groups):
            labels[id(t)] = len(tracks) + int(g)
    clusters: dict[int, dict] = {}
    for t in tracks:
        cluster = clusters.setdefault(labels[id(t)], {"tracks": [], "frames": set()})
        cluster["tracks"].append(t)
        cluster["frames"] |= set(t.frames)
    clusters_list = list(clusters.values())
    for i, cluster in enumerate(clusters_list):
        for track in cluster["tracks"]:
            track.person = i
    _attach_unidentified(tracks, clusters_list, reach)
    clusters_list = [c for c in clusters_list if c["tracks"]]
    clusters_list.sort(key=lambda c: (min(min(t.frames) for t in c["tracks"]), min(t.id for t in c["tracks"])))
    for number, cluster in enumerate(clusters_list, start=1):
        for track in cluster["tracks"]:
            track.person = number


def _average_linkage_groups(square: np.ndarray, threshold: float) -> np.ndarray:
    """A group number for each row of a symmetric distance matrix: SciPy's average-linkage tree
    cut at `threshold` (fcluster's "distance" criterion).

    Average linkage joins two groups at the mean of the distances between their members, which
    lies between the smallest and the largest distance of the matrix. So when every distance is
    under the cut, every join is and all rows are one group; when every distance is over it, no
    join is and each row is a group of its own. Only in between is the tree built: importing
    SciPy's clustering takes about 0.2 s, on the run's serial path between detection and the
    swap, and a clip of one person (an interview, a vlog) never needs it. The margin keeps the
    rounding of those means away from the cut.
    """
    n = len(square)
    between = square[~np.eye(n, dtype=bool)]
    if between.max() < threshold - _CUT_MARGIN:
        return np.ones(n, dtype=int)
    if between.min() > threshold + _CUT_MARGIN:
        return np.arange(1, n + 1)
    # lazy: SciPy is slow to import, and only this path needs it
    from scipy.cluster.hierarchy import fcluster, linkage

    # lazy: SciPy is slow to import, and only this path needs it
    from scipy.spatial.distance import squareform

    return fcluster(linkage(squareform(square, checks=False), "average"), threshold, criterion="distance")


def _attach_unidentified(tracks: list[Track], clusters: list[dict], reach: int) -> None:
    """A track without an identity sample (shorter than the sampling interval, e.g. a face back
    for a few frames after a longer miss than track_gap) joins the person of the nearest track in
    time that ends before it (or starts after it) within `reach` frames in the same shot, at the
    same place, and is not on screen at the same time."""

    # Tracks by the frame they end on and the frame they start on: only those within reach are looked at.
    by_end = sorted(tracks, key=lambda t: t.frames[-1])
    ends = [t.frames[-1] for t in by_end]
    by_start = sorted(tracks, key=lambda t: t.frames[0])
    starts = [t.frames[0] for t in by_start]
    for track in by_start:
        if track.embeddings or len(clusters[track.person]["tracks"]) > 1:
            continue
        first, last = _box(track.rows[0]), _box(track.rows[-1])
        best = None
        before = by_end[bisect.bisect_left(ends, track.frames[0] - reach):bisect.bisect_left(ends, track.frames[0])]
        after = by_start[bisect.bisect_right(starts, track.frames[-1]):
                         bisect.bisect_right(starts, track.frames[-1] + reach)]
        for other in before + after:
            if other is track or other.shot != track.shot or other.person == track.person:
                continue
            if 0 < track.frames[0] - other.frames[-1] <= reach:
                gap, a, b = track.frames[0] - other.frames[-1], _box(other.rows[-1]), first
            elif 0 < other.frames[0] - track.frames[-1] <= reach:
                gap, a, b = other.frames[0] - track.frames[-1], last, _box(other.rows[0])
            else:
                continue
            if not _same_place(a, b) or clusters[other.person]["frames"] & set(track.frames):
                continue
            if best is None or gap < best[0]:
                best = (gap, other)
        if best is not None:
            own, target = clusters[track.person], clusters[best[1].person]
            own["tracks"].remove(track)
            own["frames"] -= set(track.frames)
            target["tracks"].append(track)
            target["frames"] |= set(track.frames)
            track.person = best[1].person


def _same_place(a: np.ndarray, b: np.ndarray) -> bool:
    size = np.sqrt(max((a[2] - a[0]) * (a[3] - a[1]), 1.0))
    centre = np.hypot(*((a[:2] + a[2:]) / 2 - (b[:2] + b[2:]) / 2)) / size
    return box_iou(a, b) >= LINK_IOU or centre <= LINK_CENTRE


# ---------------------------------------------------------------------------------------------
# The whole stage


@dataclass
class TrackingResult:
    rows: list[dict]  # TRACKS_SCHEMA rows, by frame, person and track
    persons: list[dict]
    cuts: list[int]
    filled: int
    unfilled: int

    @property
    def tracks(self):
        """The rows as a DataFrame (TRACKS_SCHEMA's columns)."""
        # lazy: pandas costs the tracking job 0.2 s to import; the stage itself does without
        import pandas as pd

        return pd.DataFrame(self.rows, columns=TRACKS_SCHEMA.names)


def track_faces(segments: list[Segment], *, track_gap: int, smoothing: float, shot_threshold: float,
                metric: Metric | str, fps: float = 0.0) -> TrackingResult:
    """Tracks, gaps, smoothing and persons of a job (see the module's description)."""
    faces, thumbs = read_detections(segments)
    cuts = shot_changes(thumbs, shot_threshold)
    detected = [row for row in faces if not row.hold]
    held_at: dict[int, list[Detection]] = {}
    for row in faces:
        if row.hold:
            held_at.setdefault(row.frame, []).append(row)
    tracks = link(detected, cuts, track_gap=track_gap, metric=metric)
    group_persons(tracks, metric=metric, reach=max(2 * track_gap, IDENTITY_REACH))
    rows, filled, unfilled = [], 0, 0
    for track in tracks:
        track_rows, f, u = _track_rows(track, held_at)
        filled, unfilled = filled + f, unfilled + u
        rows += _smoothed(track_rows, smoothing)
    rows.sort(key=lambda row: (row["frame"], row["person"], row["track"]))
    persons = describe_persons(rows, fps)
    log.info("%d detections in %d tracks of %d persons; %d shot changes %s; %d missed frames filled "
             "inside tracks, %d left (no held crop covered them)", len(detected), len(tracks), len(persons),
             len(cuts), cuts[:20], filled, unfilled)
    return TrackingResult(rows, persons, cuts, filled, unfilled)


def _track_rows(track: Track, held_at: dict) -> tuple[list[dict], int, int]:
    """A track's rows, with its gaps filled from held crops where one covers the face."""
    out, filled, unfilled = [], 0, 0
    for k, (frame, row) in enumerate(zip(track.frames, track.rows)):
        if k:
            before_frame, before = track.frames[k - 1], track.rows[k - 1]
            for f in range(before_frame + 1, frame):
                t = (f - before_frame) / (frame - before_frame)
                box = (1 - t) * _box(before) + t * _box(row)
                hold = max(held_at.get(f, []), key=lambda h: box_iou(_box(h), box), default=None)
                if hold is None or box_iou(_box(hold), box) < HOLD_IOU:
                    unfilled += 1
                    continue
                lm = (None if before.landmarks is None or row.landmarks is None
                      else (1 - t) * np.asarray(before.landmarks) + t * np.asarray(row.landmarks))
                out.append(_out_row(track, f, hold, box, (1 - t) * np.asarray(before.kps) + t * np.asarray(row.kps),
                                    lm, filled=True))
                filled += 1
        out.append(_out_row(track, frame, row, _box(row), np.asarray(row.kps),
                            None if row.landmarks is None else np.asarray(row.landmarks), filled=False))
    return out, filled, unfilled


def _out_row(track: Track, frame: int, row, box, kps, landmarks, *, filled: bool) -> dict:
    return {"frame": frame, "segment": row.segment, "seg_frame": int(row.seg_frame), "face": int(row.face),
            "filled": filled, "track": track.id, "person": track.person,
            "x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3],
            "kps": np.asarray(kps, np.float64),
            "landmarks": None if landmarks is None else np.asarray(landmarks, np.float64),
            "embedding": None if filled or row.embedding is None else np.asarray(row.embedding, np.float64)}


def _smoothed(rows: list[dict], sigma: float) -> list[dict]:
    """Keypoints and landmarks smoothed along a track (a centred Gaussian of sigma frames).

    The track's frames are consecutive once its gaps are filled; a gap that stayed open (no held
    crop) is smoothed across as if it were filled, which is what the face did in it.
    """
    # The rows keep their arrays (_out_row): the table writer takes them as they are.
    if sigma <= 0 or len(rows) < 2:
        return rows
    kps = _gaussian(np.stack([r["kps"] for r in rows]), sigma)
    has_lm = all(r["landmarks"] is not None for r in rows)
    lms = _gaussian(np.stack([r["landmarks"] for r in rows]), sigma) if has_lm else None
    for i, row in enumerate(rows):
        row["kps"] = kps[i]
        row["landmarks"] = lms[i] if has_lm else None
    return rows


def _gaussian(values: np.ndarray, sigma: float) -> np.ndarray:
    """Each column smoothed along the rows by a Gaussian of sigma rows (truncate=4), as a local
    linear fit: a row whose window reaches past either end of the track takes the value at that
    row of the line fitted by Gaussian-weighted least squares to the rows its window holds.

    The window's mean there (the ends repeated or reflected) would pull a moving face's first and
    last frames back towards the track's inside: on a camera pan of 10 px a frame the first and
    last frames' keypoints lagged 5.5 px behind the face, which the swap then missed by as much
    (or the occlusion test took the misplaced face for a covered one and left it unswapped). A
    line through the window follows steady motion to the track's ends. Where the window is whole
    the fit's value is the plain Gaussian mean (its first moment is zero): the same numbers.
    """
    values = np.ascontiguousarray(values, np.float64)
    radius = int(4 * sigma + 0.5)
    kernel = cv2.getGaussianKernel(2 * radius + 1, sigma, cv2.CV_64F)
    out = cv2.sepFilter2D(values, cv2.CV_64F, np.ones(1), kernel, borderType=cv2.BORDER_REPLICATE)
    n = len(values)
    weights = kernel[:, 0]
    for row in {*range(min(radius, n)), *range(max(n - radius, 0), n)}:
        lo, hi = max(row - radius, 0), min(row + radius + 1, n)
        offset = np.arange(lo, hi, dtype=np.float64) - row
        w = weights[offset.astype(np.int64) + radius]
        s0, s1, s2 = w.sum(), (w * offset).sum(), (w * offset * offset).sum()
        sy, sty = w @ values[lo:hi], (w * offset) @ values[lo:hi]
        out[row] = (s2 * sy - s1 * sty) / (s0 * s2 - s1 * s1)
    return out


def describe_persons(table: list[dict], fps: float) -> list[dict]:
    """The cast: per person, frames on screen, screen time, first and last frame, face area and
    the detected face (not interpolated) with the largest box, for a thumbnail. table: the tracks'
    rows (TrackingResult.rows), in their order."""
    persons = []
    by_person: dict[int, list[dict]] = {}
    for row in table:
        by_person.setdefault(row["person"], []).append(row)
    for person, rows in sorted(by_person.items()):
        area = (np.maximum(np.array([r["x2"] - r["x1"] for r in rows], np.float64), 0)
                * np.maximum(np.array([r["y2"] - r["y1"] for r in rows], np.float64), 0))
        detected = [i for i, r in enumerate(rows) if not r["filled"]] or list(range(len(rows)))
        # The largest box; among equal boxes the earliest frame, then the first row.
        best = rows[min(detected, key=lambda i: (-area[i], rows[i]["frame"]))]
        frames = len({r["frame"] for r in rows})
        samples = [r["embedding"] for r in rows if r["embedding"] is not None]
        if len(samples) > IDENTITY_SAMPLES:
            samples = [samples[i] for i in np.linspace(0, len(samples) - 1, IDENTITY_SAMPLES).round().astype(int)]
        persons.append({
            "person": int(person), "frames": frames,
            "seconds": round(frames / fps, 3) if fps > 0 else None,
            "first_frame": int(min(r["frame"] for r in rows)), "last_frame": int(max(r["frame"] for r in rows)),
            "tracks": len({r["track"] for r in rows}), "filled": int(sum(bool(r["filled"]) for r in rows)),
            "presence": float(area.sum()),
            "thumbnail": {"segment": str(best["segment"]), "frame": int(best["seg_frame"]),
                          "face": int(best["face"])},
            "identity": [np.round(np.asarray(e, np.float64), 5).tolist() for e in samples],
        })
    return persons


def segments_of(manifest: dict, faces_dir: str | Path) -> list[Segment]:
    """The job's segments in order, with the video frame each starts after."""

    faces_dir = Path(faces_dir)
    starts = planned_starts(manifest)
    return [Segment(name, starts[name], faces_dir / f"{name}.parquet", faces_dir / f"{name}.frames.parquet")
            for name in sorted(manifest["segments"])]


def run_tracking(manifest: dict, faces_dir: str | Path, tracks_out: str | Path, persons_out: str | Path, *,
                 track_gap: int, smoothing: float, shot_threshold: float, metric: Metric | str) -> TrackingResult:
    """The tracking stage of a job: reads its faces tables, writes its tracks table (a row group
    per segment, so the swap of one segment reads its own rows) and its persons (sealed JSON)."""

    fps = float(Fraction(manifest["fps"])) if not manifest["is_image"] else 0.0
    result = track_faces(segments_of(manifest, faces_dir), track_gap=track_gap, smoothing=smoothing,
                         shot_threshold=shot_threshold, metric=metric, fps=fps)
    with TableWriter(tracks_out, TRACKS_SCHEMA) as writer:
        for segment in sorted({row["segment"] for row in result.rows}):
            writer.add([row for row in result.rows if row["segment"] == segment])
            writer.flush()
    write_sealed_json(persons_out, {"fps": fps, "frames": manifest["frames"], "cuts": result.cuts,
                                    "filled": result.filled, "unfilled": result.unfilled,
                                    "persons": result.persons})
    return result
