"""The tracking stage and per-person selection on their own (tables only, made up here)."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from facepipe.models.alignment import alignment_matrix
from facepipe.faces.detection import face_rows, write_faces
from facepipe.media.tables import THUMB_SIZE
from facepipe.faces.selection import MapError, choose, map_text, parse_map
from facepipe.media.tables import FRAMES_SCHEMA, write_table
from facepipe.faces.shots import shot_changes
from facepipe.faces.tracking import Segment, track_faces
from facepipe.media.video import WorkFrame


def _kps(box):
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    return [x1 + .3 * w, y1 + .4 * h, x1 + .7 * w, y1 + .4 * h, x1 + .5 * w, y1 + .6 * h,
            x1 + .35 * w, y1 + .8 * h, x1 + .65 * w, y1 + .8 * h]


def _row(frame, face, box, emb=None, hold=False, held_from=0):
    return {"frame": frame, "face": face, "x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3], "score": 1.0,
            "kps": _kps(box), "embedding": None if emb is None else list(emb), "landmarks": None,
            "hold": hold, "held_from": held_from, "crop": None, "crop_x": 0, "crop_y": 0, "crop_matrix": None}


def _thumb(value):
    return np.full((THUMB_SIZE, THUMB_SIZE, 3), value, np.uint8).tobytes()


def _segments(tmp_path, rows, frames, cut_at=(), per_segment=None):
    """Faces and frames tables for frames 1..frames, split every per_segment frames."""
    per_segment = per_segment or frames
    segments = []
    for s, start in enumerate(range(0, frames, per_segment)):
        name = f"seg_{s:04d}"
        mine = [{**r, "frame": r["frame"] - start} for r in rows if start < r["frame"] <= start + per_segment]
        write_faces(pd.DataFrame(mine, columns=list(_row(1, 0, (0, 0, 1, 1)))), tmp_path / f"{name}.parquet")
        shade = lambda f: 200 if any(f >= c for c in cut_at) else 20  # noqa: E731
        thumbs = [{"frame": f - start, "thumb": _thumb(shade(f))}
                  for f in range(start + 1, min(frames, start + per_segment) + 1)]
        write_table([thumbs], tmp_path / f"{name}.frames.parquet", FRAMES_SCHEMA)
        segments.append(Segment(name, start, tmp_path / f"{name}.parquet", tmp_path / f"{name}.frames.parquet"))
    return segments


A_EMB = np.eye(8)[0]
B_EMB = np.eye(8)[1]


def _crossing(frames=30, miss=(10, 11, 12)):
    """Two faces changing places (A left to right, B right to left, B lower), A missed on `miss`
    with held crops where it was, embeddings on every 5th frame."""
    rows = []
    for f in range(1, frames + 1):
        ax, bx = 10 + 8 * f, 250 - 8 * f
        a, b = (ax, 20, ax + 60, 80), (bx, 120, bx + 50, 170)
        emb = f % 5 == 1
        faces = [] if f in miss else [("A", a)]
        faces.append(("B", b))
        for i, (who, box) in enumerate(faces):
            rows.append(_row(f, i, box, (A_EMB if who == "A" else B_EMB) if emb else None))
        if f in miss:
            rows.append(_row(f, len(faces), (ax - 8 * (f - miss[0] + 1), 20, ax - 8 * (f - miss[0] + 1) + 60, 80),
                             hold=True, held_from=miss[0] - 1))
    return rows


def test_shot_changes_from_thumbnails():
    thumbs = {f: _thumb(20 if f < 7 else 200) for f in range(1, 12)}
    assert shot_changes(thumbs, 30) == [7]
    assert shot_changes(thumbs, 0) == []
    assert shot_changes({f: _thumb(20 + f) for f in range(1, 12)}, 30) == []  # a slow fade is no cut


def test_tracks_fill_gaps_from_held_crops_and_keep_persons_apart(tmp_path):
    result = track_faces(_segments(tmp_path, _crossing(), 30), track_gap=5, smoothing=0, shot_threshold=30,
                         metric="cosine")
    table = result.tracks
    assert result.filled == 3 and result.unfilled == 0
    assert [p["person"] for p in result.persons] == [1, 2]
    a = table[table["person"] == 1]
    assert list(a["frame"]) == list(range(1, 31))  # the miss is filled
    assert list(a[a["filled"]]["frame"]) == [10, 11, 12]
    # The interpolated box sits between the detections on either side.
    row = a[a["frame"] == 11].iloc[0]
    assert row["x1"] == pytest.approx(10 + 8 * 11)
    assert (table[table["person"] == 2]["y1"] == 120).all()  # B never takes A's id


def test_a_gap_longer_than_track_gap_splits_the_track_and_identity_rejoins_it(tmp_path):
    rows = _crossing(miss=tuple(range(10, 17)))
    result = track_faces(_segments(tmp_path, rows, 30), track_gap=3, smoothing=0, shot_threshold=30,
                         metric="cosine")
    a = result.tracks[result.tracks["y1"] == 20]
    assert a["track"].nunique() == 2 and a["person"].nunique() == 1  # two tracks, one person
    assert not a["filled"].any()


def test_no_track_crosses_a_cut_and_a_person_keeps_one_id_across_it(tmp_path):
    rows = [_row(f, 0, (100, 50, 160, 110), A_EMB if f % 5 == 1 else None) for f in range(1, 21)]
    rows = [r for r in rows if r["frame"] != 11]  # missed right after the cut
    result = track_faces(_segments(tmp_path, rows, 20, cut_at=(10,)), track_gap=5, smoothing=0, shot_threshold=30,
                         metric="cosine")
    assert result.cuts == [10]
    table = result.tracks
    assert table[table["frame"] < 10]["track"].nunique() == 1
    assert set(table[table["frame"] < 10]["track"]).isdisjoint(table[table["frame"] >= 10]["track"])
    assert table["person"].nunique() == 1


def test_tracks_are_the_same_however_the_video_is_split(tmp_path):
    rows = _crossing()
    (tmp_path / "w").mkdir()
    (tmp_path / "s").mkdir()
    whole = track_faces(_segments(tmp_path / "w", rows, 30), track_gap=5, smoothing=1.5, shot_threshold=30,
                        metric="cosine").tracks
    split = track_faces(_segments(tmp_path / "s", rows, 30, per_segment=7), track_gap=5, smoothing=1.5,
                        shot_threshold=30, metric="cosine").tracks
    cols = ["frame", "person", "filled", "x1", "y1"]
    pd.testing.assert_frame_equal(whole[cols], split[cols])
    assert np.allclose(np.stack(whole["kps"]), np.stack(split["kps"]))


class _Blinking:
    """A fake analyzer: one face at a fixed place, missed on some frames."""

    def __init__(self, missed):
        self.missed = set(missed)
        self.embedded = []

    def analyze_frames(self, items, first_frame=1):
        for frame, embed in items:
            yield self.analyze_frame(frame, embed)

    def analyze_frame(self, frame, embed=True):
        if embed:
            self.embedded.append(frame.number)
        if frame.number in self.missed:
            return []
        box = np.array([20, 20, 60, 60], np.float32)
        return [{"box": box, "score": 0.9, "kps": np.asarray(_kps(box), np.float32).reshape(5, 2),
                 "embedding": np.ones(4, np.float32) if embed else None}]



def test_a_red_whose_hue_crosses_the_end_of_the_scale_is_no_shot_change():
    """Red lies at both ends of the hue scale: a red a few degrees either side of it is the same red,
    not a change of 250 levels in hue."""
    def red(hue):
        hsv = np.full((THUMB_SIZE, THUMB_SIZE, 3), (hue, 220, 200), np.uint8)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR_FULL).tobytes()

    assert shot_changes({1: red(3), 2: red(252), 3: red(5)}, 30) == []
    assert shot_changes({1: red(3), 2: red(128)}, 30) == [2]  # red to cyan is one


def test_a_pan_across_fine_detail_is_no_shot_change():
    """A fast pan (7 px a frame) across cells of random colour 3 px wide: the thumbnail averages the
    frame (a bilinear resize straight to its size read a few pixels of each part, which the cells
    passing under them changed on every frame), and the greyish average's hue, which is noise, does
    not count (28 cuts in 29 frames before either, 27 with the average alone)."""
    from facepipe.faces.shots import frame_thumbnail

    cells = np.random.default_rng(0).integers(0, 256, (90, 400, 3), dtype=np.uint8)
    texture = cv2.resize(cells, (1200, 270), interpolation=cv2.INTER_NEAREST)
    frames = {n: frame_thumbnail(WorkFrame(n, bgr=np.ascontiguousarray(texture[:, 7 * n:7 * n + 480])))
              for n in range(1, 30)}
    assert shot_changes(frames, 30) == []
    frames[30] = frame_thumbnail(WorkFrame(30, bgr=np.full((270, 480, 3), (200, 120, 40), np.uint8)))
    assert shot_changes(frames, 30) == [30]

def test_detection_holds_crops_on_both_sides_of_a_miss_and_samples_identity():
    from facepipe.media.patches import decode_image

    frames = [WorkFrame(n, bgr=np.full((100, 100, 3), n, np.uint8)) for n in range(1, 13)]
    analyzer = _Blinking(missed={5, 6, 7})
    thumbs = []
    per_frame = list(face_rows(analyzer, frames, "aligned:arcface_128:128", first_frame=11, hold_frames=2,
                               identity_every=5, thumbnails=thumbs))
    assert len(per_frame) == 12 and len(thumbs) == 12
    held = [(r["frame"], r["held_from"]) for rows in per_frame for r in rows if r["hold"]]
    # forward from frame 4 over 5 and 6; back from frame 8 over 7 and 6
    assert sorted(held) == [(5, 4), (6, 4), (6, 8), (7, 8)]
    crop = decode_image(next(r["crop"] for rows in per_frame for r in rows if r["hold"] and r["frame"] == 5))
    assert crop.shape[0] == 128 + 2 * 48 and int(np.median(crop)) in (5, 0)  # cut from frame 5 itself
    # video frames 11.. : frame n is video frame n + 10, embedded when (n + 10 - 1) % 5 == 0
    assert analyzer.embedded == [1, 6, 11]



class _Refinding(_Blinking):
    """A fake analyzer whose detector misses the face on some frames, where looking again from a
    neighbouring frame's face reads it on some of them (a face partly out of the frame)."""

    def __init__(self, missed, readable):
        super().__init__(missed)
        self.readable = set(readable)
        self.asked = []

    def refind(self, frame, face):
        self.asked.append(frame.number)
        if frame.number not in self.readable:
            return None
        return {**face, "box": face["box"] + 1, "embedding": None}


def test_detection_refinds_a_missed_face_from_the_frames_beside_it():
    frames = [WorkFrame(n, bgr=np.full((100, 100, 3), n, np.uint8)) for n in range(1, 13)]
    analyzer = _Refinding(missed={5, 6, 7}, readable={5, 7})
    per_frame = list(face_rows(analyzer, frames, "aligned:arcface_128:128", hold_frames=2))
    found = sorted(r["frame"] for rows in per_frame for r in rows if not r["hold"])
    held = sorted((r["frame"], r["held_from"]) for rows in per_frame for r in rows if r["hold"])
    # Frame 5 read on from frame 4, frame 7 back from frame 8; frame 6 not read from either side: held
    # (from the faces refound on 5 and 7).
    assert found == [1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12]
    assert (6, 5) in held and (6, 7) in held
    assert sorted(analyzer.asked) == [5, 6, 6, 7]
    refound = [r for rows in per_frame for r in rows if r["frame"] in (5, 7) and not r["hold"]]
    assert all(r["crop"] is not None and r["x1"] == 21 for r in refound)

def test_smoothing_lowers_keypoint_jitter(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for f in range(1, 61):
        box = (100 + 2 * f, 50, 160 + 2 * f, 110)
        row = _row(f, 0, box, A_EMB if f % 5 == 1 else None)
        row["kps"] = (np.asarray(row["kps"]) + rng.normal(0, 1.5, 10)).tolist()
        rows.append(row)
    jitter = {}
    for sigma in (0, 1.5):
        (tmp_path / str(sigma)).mkdir()
        table = track_faces(_segments(tmp_path / str(sigma), rows, 60), track_gap=5, smoothing=sigma,
                            shot_threshold=30, metric="cosine").tracks
        kps = np.stack(table["kps"])
        jitter[sigma] = float(np.abs(np.diff(kps, n=2, axis=0)).mean())
    print(f"keypoint jitter (mean |second difference|, px): raw {jitter[0]:.2f}, smoothed {jitter[1.5]:.2f}")
    assert jitter[1.5] < 0.3 * jitter[0]



def test_smoothing_keeps_a_moving_face_in_place_at_the_tracks_ends(tmp_path):
    """A face panning 10.3 px a frame: smoothing must not pull the first and last frames' keypoints
    back towards the track's inside (the ends' window mean lagged 5.5 px, and the swap missed the
    face by as much), and still smooths the noise there."""
    truth, rows = [], []
    rng = np.random.default_rng(1)
    for f in range(1, 41):
        box = (40 + 10.3 * f, 50, 140 + 10.3 * f, 150)
        truth.append(_kps(box))
        row = _row(f, 0, box, A_EMB if f % 5 == 1 else None)
        rows.append(row)
    truth = np.asarray(truth)
    table = track_faces(_segments(tmp_path, rows, 40), track_gap=5, smoothing=1.5, shot_threshold=30,
                        metric="cosine").tracks
    kps = np.stack(table.sort_values("frame")["kps"])
    print(f"steady pan, smoothed keypoints off the face: first frame {np.abs(kps[0] - truth[0]).max():.3f} px, "
          f"last {np.abs(kps[-1] - truth[-1]).max():.3f} px")
    assert np.abs(kps - truth).max() < 0.01
    for row in rows:
        row["kps"] = (np.asarray(row["kps"]) + rng.normal(0, 1.5, 10)).tolist()
    (tmp_path / "noisy").mkdir()
    noisy = track_faces(_segments(tmp_path / "noisy", rows, 40), track_gap=5, smoothing=1.5, shot_threshold=30,
                        metric="cosine").tracks
    kps = np.stack(noisy.sort_values("frame")["kps"])
    raw = np.stack([r["kps"] for r in rows])
    ends = [0, 1, 2, -3, -2, -1]
    off, raw_off = np.abs(kps[ends] - truth[ends]).mean(), np.abs(raw[ends] - truth[ends]).mean()
    print(f"noisy pan, the last three frames at each end off the face: smoothed {off:.2f} px, raw {raw_off:.2f} px")
    assert off < raw_off

PERSONS = [
    {"person": 1, "presence": 900.0, "identity": [list(A_EMB), list(A_EMB * 0.9 + B_EMB * 0.1)]},
    {"person": 2, "presence": 1000.0, "identity": [list(B_EMB)]},
    {"person": 3, "presence": 50.0, "identity": []},
]


def test_selection_by_person():
    assert choose(PERSONS, mode="one", metric="cosine", threshold=0.35) == {2: "source"}
    assert choose(PERSONS, mode="many", metric="cosine", threshold=0.35) == {1: "source", 2: "source",
                                                                            3: "source"}
    assert choose(PERSONS, mode="reference", metric="cosine", threshold=0.35, reference=A_EMB) == {1: "source"}


def test_map_by_id_and_by_reference():
    entries = parse_map("3=bob.jpg; ref_a.jpg=alice.jpg")
    chosen = choose(PERSONS, mode="one", metric="cosine", threshold=0.35, entries=entries,
                    references={"reference ref_a.jpg": A_EMB})
    assert chosen == {3: "person 3", 1: "reference ref_a.jpg"}  # person 2 (the largest) is not mapped
    assert choose(PERSONS, mode="one", metric="cosine", threshold=0.35, entries=parse_map("7=x.jpg")) == {}


def test_map_text_round_trip_and_errors():
    entries = parse_map("1=alice.jpg;ref #2.jpg=bob smith.jpg")
    assert map_text(entries) == "1=alice.jpg;ref #2.jpg=bob smith.jpg"
    assert parse_map({1: "a.jpg", "r.png": "b.jpg"}) == parse_map("1=a.jpg;r.png=b.jpg")
    assert parse_map("") == [] and parse_map(None) == []
    for bad, message in (("alice.jpg", "no '='"), ("1=", "both sides"), ("0=a.jpg", "start at 1"),
                         ("1=a.jpg;1=b.jpg", "twice")):
        with pytest.raises(MapError, match=message):
            parse_map(bad)


def test_swap_input_realigns_the_kept_crop_and_refuses_a_face_outside_it():
    from facepipe.faces.detection import OutsideCrop, face_crop, swap_input
    from facepipe.media.patches import decode_image

    rng = np.random.default_rng(3)
    img = cv2.GaussianBlur(rng.integers(0, 256, (240, 320, 3), np.uint8), (0, 0), 2)
    box = (120, 60, 200, 140)
    kps = np.asarray(_kps(box), np.float32).reshape(5, 2)
    frame = WorkFrame(1, bgr=img)
    row = pd.Series({**face_crop(frame, {"kps": kps}, "aligned:arcface_128:128"), "landmarks": None})
    row = next(pd.DataFrame([row]).itertuples(index=False))
    assert decode_image(row.crop).shape == (144, 144, 3)
    # The detected keypoints: exactly the crop insightface's swapper cuts from the frame.
    kind = "aligned:arcface_128:128"
    crop, args = swap_input(row, kps, kind=kind)
    from insightface.utils import face_align

    matrix = alignment_matrix(kps, "arcface_128", 128)
    direct = cv2.warpAffine(img, matrix, (128, 128), borderValue=0.0)
    # (warpAffine rounds its sample positions per output pixel, so a cut moved by whole pixels
    # can differ by one level in a few pixels.)
    assert np.abs(crop.astype(int) - direct).max() <= 1 and (crop != direct).mean() < 0.001
    assert np.allclose(args["matrix"], face_align.estimate_norm(kps, 128), atol=1e-3)
    # Keypoints moved a little (smoothing): re-aligned from the kept crop, close to a fresh cut.
    moved = kps + (1.3, -0.7)
    again, _ = swap_input(row, moved, kind=kind)
    fresh = cv2.warpAffine(img, alignment_matrix(moved, "arcface_128", 128), (128, 128), borderValue=0.0)
    assert np.abs(again.astype(int) - fresh.astype(int))[8:-8, 8:-8].mean() < 3
    with pytest.raises(OutsideCrop):
        swap_input(row, kps + 25, kind=kind)



def test_swap_input_takes_a_face_partly_out_of_the_frame_and_refuses_one_out_of_its_crop():
    """The offline mesh keeps its points past the frame's edge (a face partly out of the frame); the
    crop detection keeps ends at the edge. Given the frame's size, the swap takes such a face; a face
    that moved out of its crop inside the frame is still refused."""
    from types import SimpleNamespace

    from facepipe.faces.detection import OutsideCrop, face_crop, swap_input

    frame = WorkFrame(1, bgr=np.full((120, 200, 3), 90, np.uint8))
    rng = np.random.default_rng(3)
    # A face whose left fifth lies past the frame's left edge, and whose bottom past its bottom edge.
    landmarks = np.column_stack([rng.uniform(-12, 50, 468), rng.uniform(60, 130, 468)]).astype(np.float32)
    face = {"box": np.array([0, 60, 50, 120], np.float32), "kps": landmarks[:5], "landmarks": landmarks}
    row = SimpleNamespace(**face_crop(frame, face, "landmark_box"), landmarks=landmarks.reshape(-1))
    crop, args = swap_input(row, landmarks[:5], landmarks, "landmark_box", frame_size=(200, 120))
    # The crop ends at the frame's left and bottom edges; the landmarks are handed on as they are.
    assert row.crop_x == 0 and row.crop_y + crop.shape[0] == 120
    assert np.array_equal(args["landmarks"], landmarks.reshape(-1))
    with pytest.raises(OutsideCrop):
        swap_input(row, landmarks[:5], landmarks, "landmark_box")  # without the frame's size
    with pytest.raises(OutsideCrop):
        swap_input(row, landmarks[:5], landmarks + (30, 0), "landmark_box", frame_size=(200, 120))

def test_a_video_without_faces_has_no_persons_and_swaps_nothing(tmp_path):
    from facepipe.faces.cast import contact_sheet
    from facepipe.swap.segment import swap_segment

    result = track_faces(_segments(tmp_path, [], 10), track_gap=5, smoothing=1.5, shot_threshold=30,
                         metric="cosine")
    assert result.tracks.empty and result.persons == []
    assert choose(result.persons, mode="one", metric="cosine", threshold=0.35) == {}
    rows = result.tracks.assign(source=pd.Series(dtype=str))
    assert swap_segment(tmp_path / "seg_0000.parquet", rows, {}, tmp_path / "out.parquet",
                        crop_kind="aligned:arcface_128:128") == 0
    assert contact_sheet({"fps": 25.0, "persons": []}, {}).shape[0] > 0


def test_a_short_track_without_identity_joins_the_person_it_continues(tmp_path):
    """A face missed for longer than track_gap comes back for a few frames between identity
    samples: its track has no identity of its own, and joins the track it continues in place."""
    rows = [_row(f, 0, (100, 50, 160, 110), A_EMB if f % 10 == 1 else None) for f in range(1, 13)]
    rows += [_row(f, 0, (102, 50, 162, 110)) for f in range(20, 25)]  # back after 7 missed frames
    rows += [_row(f, 0, (300, 50, 360, 110), B_EMB if f % 10 == 1 else None) for f in range(1, 25)]
    result = track_faces(_segments(tmp_path, rows, 24), track_gap=3, smoothing=0, shot_threshold=30,
                         metric="cosine")
    table = result.tracks
    left = table[table["x1"] < 200]
    assert left["track"].nunique() == 2 and left["person"].nunique() == 1
    assert len(result.persons) == 2


def test_one_track_and_one_face_cost_the_same_as_the_array_path():
    """The shortcut for one track and one detection gives what the all-pairs arrays give."""
    from types import SimpleNamespace

    from facepipe.faces.tracking import Track, _link_costs
    from facepipe.models.metrics import COSINE, EUCLIDEAN

    rng = np.random.default_rng(5)
    for case in range(200):
        def row(x, y, s, emb):
            return SimpleNamespace(x1=x, y1=y, x2=x + s, y2=y + s, kps=list(rng.uniform(x, x + s, 10)), embedding=emb)

        metric = (COSINE, EUCLIDEAN)[case % 2]
        emb = lambda: list(rng.normal(size=8)) if rng.random() < 0.6 else None  # noqa: E731
        track = Track(id=1, shot=0)
        for f in (1, 2):
            r = row(*rng.uniform(0, 100, 2), rng.uniform(20, 60), emb())
            track.frames.append(f)
            track.rows.append(r)
            if r.embedding is not None:
                track.embeddings.append(np.asarray(r.embedding))
        other = row(*rng.uniform(0, 100, 2), rng.uniform(20, 60), emb())
        decoy = row(500.0, 500.0, 30.0, None)  # a second face forces the array path
        single = _link_costs([track], [other], 3, metric, metric.link_distance)
        arrays = _link_costs([track], [other, decoy], 3, metric, metric.link_distance)[:, :1]
        assert single.shape == (1, 1)
        assert (np.isinf(single) == np.isinf(arrays)).all() and np.allclose(single[np.isfinite(single)],
                                                                             arrays[np.isfinite(arrays)])


def test_persons_grouped_without_scipy_where_the_distances_decide_are_scipys_groups():
    """All distances under the cut (one person) or all over it (each track alone): the grouping
    made without SciPy partitions the tracks as SciPy's average-linkage tree cut there does, and
    matrices in between still go to SciPy."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    from facepipe.faces.tracking import APART, _average_linkage_groups

    def partition(groups):
        return sorted(sorted(np.flatnonzero(groups == g).tolist()) for g in set(groups.tolist()))

    rng = np.random.default_rng(11)
    shortcuts = 0
    for case in range(300):
        n = int(rng.integers(2, 9))
        low, high = [(0.0, 0.49), (0.51, 1.5), (0.2, 0.8)][case % 3]
        square = rng.uniform(low, high, (n, n))
        square = (square + square.T) / 2
        if case % 7 == 0:
            square[0, 1] = square[1, 0] = APART  # two tracks on one frame
        np.fill_diagonal(square, 0.0)
        scipy_groups = fcluster(linkage(squareform(square, checks=False), "average"), 0.5, criterion="distance")
        between = square[~np.eye(n, dtype=bool)]
        shortcuts += between.max() < 0.5 or between.min() > 0.5
        assert partition(_average_linkage_groups(square, 0.5)) == partition(scipy_groups)
    assert 150 < shortcuts < 300  # both shortcuts taken, and the tree built for the rest
