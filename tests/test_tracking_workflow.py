"""Tracks and persons end to end, on the offline backend (dlib: a real detector and recognizer),
on a clip of two real people who change places, with detector misses and a cut (track_clips).

Which faces are swapped is read from the swap stage's patches: each patch carries the tracked
keypoints of the face it replaces, and the clip's truth says whose face lies there.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from tests.workflow_helpers import copy_workflow
from tests.track_clips import make_tracking_clip
from tests.workflow_helpers import pin_backend, planned_jobs, snakemake, write_sheet

pytestmark = pytest.mark.workflow

NAME = "two"


def _inputs(dest: Path):
    """The clip, the astronaut (person A's photo) and a padded Tom Hanks (person B's) as sources."""
    from facepipe.media import demo

    dest.mkdir(parents=True, exist_ok=True)
    truth = make_tracking_clip(dest / "two people.mp4")
    demo.write_astronaut(dest / "astronaut.png")
    hanks = cv2.imread(str(demo.insightface_image("Tom_Hanks_54745.png")))
    # dlib's HOG detector needs some room around a tight 112 px face crop.
    cv2.imwrite(str(dest / "hanks.png"), cv2.copyMakeBorder(hanks, 56, 56, 56, 56, cv2.BORDER_REPLICATE))
    return truth


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return _inputs(tmp_path_factory.mktemp("tracking_inputs"))


def _workflow(dest: Path, clip, segment_seconds: float) -> Path:
    wd = copy_workflow(dest)
    pin_backend(wd, "offline")
    shutil.copytree(clip.path.parent, wd / "inputs")
    write_sheet(wd / "config" / "jobs.tsv", [{"name": NAME, "target": "inputs/two people.mp4",
                                              "source": "inputs/astronaut.png",
                                              "segment_seconds": segment_seconds}])
    snakemake(wd)
    return wd


@pytest.fixture(scope="module")
def split(tmp_path_factory, clip):
    """Segments of 11-12 frames: one begins with A's first miss (frames 12-14), and after A's second
    (48-50) the detector finds A again only on frame 57, the next segment's first (the mesh reads A
    from frame 51: detection looks past its segment's end for it)."""
    return _workflow(tmp_path_factory.mktemp("split"), clip, 0.48)


@pytest.fixture(scope="module")
def whole(tmp_path_factory, clip):
    return _workflow(tmp_path_factory.mktemp("whole"), clip, 30)


def _starts(wd: Path) -> dict[str, int]:
    from facepipe.media.integrity import read_sealed_json

    manifest = read_sealed_json(wd / "work" / NAME / "segments" / "manifest.json")
    return {seg: r["start"] for seg, r in manifest["ranges"].items()}


def swapped_faces(wd: Path) -> pd.DataFrame:
    """Every patch of the swap stage: video frame and the tracked keypoints it was made for."""
    from facepipe.media.patches import iter_patches

    rows = []
    for seg, start in _starts(wd).items():
        for frame, patches in iter_patches(wd / "work" / NAME / "swapped" / f"{seg}.parquet"):
            rows += [{"frame": start + frame, "kps": np.asarray(p.kps, float).reshape(5, 2)} for p in patches]
    return pd.DataFrame(rows, columns=["frame", "kps"])


def owner(clip, frame: int, kps: np.ndarray) -> str | None:
    """Whose true face box holds the keypoints' centre on that frame."""
    x, y = kps.mean(axis=0)
    for person in ("A", "B"):
        box = clip.box(person, frame)
        if box is not None and box[0] <= x <= box[2] and box[1] <= y <= box[3]:
            return person
    return None


def swapped_owners(wd: Path, clip) -> dict[int, list[str | None]]:
    out: dict[int, list] = {f: [] for f in range(1, clip.frames + 1)}
    for row in swapped_faces(wd).itertuples():
        out[row.frame].append(owner(clip, row.frame, row.kps))
    return out


def visible(clip, person: str) -> list[int]:
    return [f for f in range(1, clip.frames + 1) if clip.box(person, f) is not None]


def tracks(wd: Path) -> pd.DataFrame:
    from facepipe.media.tables import read_table

    table = read_table(wd / "work" / NAME / "tracks.parquet")
    table["kps"] = [tuple(np.round(np.asarray(k, float), 6)) for k in table["kps"]]
    return table[["frame", "person", "filled", "kps"]].sort_values(["frame", "person"], ignore_index=True)


@pytest.mark.parametrize("layout", ["split", "whole"])
def test_one_swaps_the_same_person_on_every_frame_including_misses(layout, request, clip):
    wd = request.getfixturevalue(layout)
    owners = swapped_owners(wd, clip)
    # A has the larger screen presence over the video: A on every frame A is in, nobody else.
    for frame in visible(clip, "A"):
        assert owners[frame] == ["A"], (frame, owners[frame])
    # Including A's detector misses (motion blur, a covering patch), filled inside the track...
    assert clip.hidden["A"] and all(owners[f] == ["A"] for f in clip.hidden["A"])
    # ...and the frames where B's face is the larger one.
    assert len(clip.b_larger()) >= 5 and all(owners[f] == ["A"] for f in clip.b_larger())
    assert (wd / "results" / f"{NAME}.mp4").is_file()


def test_cast_names_two_persons_across_the_cut(whole, clip):
    cast = pd.read_csv(whole / "results" / f"{NAME}.cast.tsv", sep="\t")
    assert list(cast["person"]) == [1, 2]
    # Each person is on screen in both shots (one id across the cut), on every frame.
    assert list(cast["frames"]) == [clip.frames, clip.frames]
    assert (cast["tracks"] == 2).all()
    sheet = cv2.imread(str(whole / "results" / f"{NAME}.cast.png"))
    assert sheet is not None and sheet.shape[1] >= 2 * 160


def test_tracks_do_not_depend_on_the_segments(split, whole):
    """Which faces are swapped on which frames is the same whether or not segment_seconds splits the
    clip (here into segments of 11-12 frames, boundaries at and across misses), and their keypoints
    all but so: the offline detector runs on the same frames of the video (one in DETECT_EVERY)
    however it is split, but also on each segment's first frame, where the whole clip's faces are
    followed by the mesh (measured: at most 2.14 px, on B turning at frame 69, a segment's first;
    0.95 px with the 12-frame segments of session 35's planner)."""
    from facepipe.models.face_mesh import DETECT_EVERY

    starts = _starts(split)
    assert len(starts) >= 9 and len(_starts(whole)) == 1
    assert any(start % DETECT_EVERY for start in starts.values())  # segments that begin between the detector's frames
    a, b = tracks(split), tracks(whole)
    pd.testing.assert_frame_equal(a.drop(columns="kps"), b.drop(columns="kps"))
    off = np.abs(np.array(a["kps"].tolist()) - np.array(b["kps"].tolist())).max(axis=1)
    print(f"\nkeypoints split against whole: {np.count_nonzero(off)} of {len(off)} faces differ, by at most "
          f"{off.max():.2f} px")
    assert off.max() < 2.5  # faces 89-137 px wide
    a, b = swapped_faces(split), swapped_faces(whole)
    assert len(a) == len(b) and sorted(a["frame"]) == sorted(b["frame"])


def test_reference_swaps_every_frame_of_the_matching_person_only(whole, clip):
    changed = planned_jobs(whole, "--config", "faces=reference", "reference=inputs/hanks.png")
    assert "detect_faces" not in changed and "track_faces" not in changed and changed.get("swap_faces")
    snakemake(whole, "--config", "faces=reference", "reference=inputs/hanks.png")
    owners = swapped_owners(whole, clip)
    for frame in range(1, clip.frames + 1):
        expected = ["B"] if clip.box("B", frame) is not None else []
        assert owners[frame] == expected, (frame, owners[frame])
    assert all(owners[f] == ["B"] for f in clip.hidden["B"])


def _person_of(wd: Path, clip, who: str) -> int:
    from facepipe.media.tables import read_table

    table = read_table(wd / "work" / NAME / "tracks.parquet")
    votes = [row.person for row in table.itertuples()
             if owner(clip, row.frame, np.asarray(row.kps, float).reshape(5, 2)) == who]
    return int(pd.Series(votes).mode()[0])


def _identity(img: np.ndarray, box) -> np.ndarray:
    from tests.hog_analyzer import OfflineAnalyzer, landmarks_model_path
    from facepipe.models.dlib_face import offline_model_path

    analyzer = OfflineAnalyzer(landmarks_model_path(), offline_model_path("dlib_resnet_v1"))
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    pad = (x2 - x1) // 2
    crop = np.ascontiguousarray(img[max(0, y1 - pad):y2 + pad, max(0, x1 - pad):x2 + pad])
    faces = analyzer.analyze(cv2.resize(crop, None, fx=2, fy=2))
    assert faces, "no face in the result crop"
    return faces[0]["embedding"]


def test_map_puts_each_source_on_its_own_person(whole, clip):
    from tests.hog_analyzer import OfflineAnalyzer, landmarks_model_path
    from facepipe.models.dlib_face import offline_model_path
    from tests.workflow_helpers import frame_before_after

    a, b = _person_of(whole, clip, "A"), _person_of(whole, clip, "B")
    assert {a, b} == {1, 2}
    mapping = f"{a}=inputs/hanks.png;{b}=inputs/astronaut.png"
    changed = planned_jobs(whole, "--config", f"map={mapping}")
    assert "detect_faces" not in changed and "track_faces" not in changed and changed.get("swap_faces")
    snakemake(whole, "--config", f"map={mapping}")
    owners = swapped_owners(whole, clip)
    for frame in range(1, clip.frames + 1):
        expected = sorted(p for p in ("A", "B") if clip.box(p, frame) is not None)
        assert sorted(owners[frame]) == expected, (frame, owners[frame])
    # Each face moved toward its own source (dlib distance), and more than toward the other one.
    # (The offline swap keeps the target's eyes and mouth, so identity moves less than with a
    # whole-face swap: person A's distance to Hanks goes from 0.78 to 0.76 on this clip. Person B
    # moves 0.007 toward the astronaut, 0.026 while her fringe's edge came over onto his forehead,
    # which dlib read as part of her; 0.305 away from Hanks.)
    analyzer = OfflineAnalyzer(landmarks_model_path(), offline_model_path("dlib_resnet_v1"))
    sources = {name: analyzer.analyze(cv2.imread(str(whole / "inputs" / f"{name}.png")))[0]["embedding"]
               for name in ("hanks", "astronaut")}
    target = whole / "inputs" / "two people.mp4"
    frame = 5
    before, after, _ = frame_before_after(whole, NAME, target, frame)
    for person, source, other in (("A", "hanks", "astronaut"), ("B", "astronaut", "hanks")):
        was, now = _identity(before, clip.box(person, frame)), _identity(after, clip.box(person, frame))
        toward = np.linalg.norm(was - sources[source]) - np.linalg.norm(now - sources[source])
        toward_other = np.linalg.norm(was - sources[other]) - np.linalg.norm(now - sources[other])
        print(f"\nperson {person}: {toward:.3f} closer to {source}, {toward_other:.3f} closer to {other}")
        assert toward > 0.004 and toward > toward_other + 0.1, person


@pytest.mark.parametrize("how", ["id", "reference"])
def test_map_leaves_unmapped_persons_alone(whole, clip, how):
    a = _person_of(whole, clip, "A")
    mapping = f"{a}=inputs/hanks.png" if how == "id" else "inputs/astronaut.png=inputs/hanks.png"
    snakemake(whole, "--config", f"map={mapping}")
    owners = swapped_owners(whole, clip)
    for frame in range(1, clip.frames + 1):
        expected = ["A"] if clip.box("A", frame) is not None else []
        assert owners[frame] == expected, (frame, owners[frame])


def test_smoothing_lowers_the_jitter_of_the_pasted_face(whole, clip, tmp_path):
    """The clip's own detections with noise added to their keypoints (sigma 1.5 px), tracked with
    and without smoothing: the pasted face's place (the aligned crop's centre in the frame) shakes
    less from frame to frame with it."""
    from insightface.utils import face_align

    from facepipe.faces.detection import read_faces, write_faces
    from facepipe.media.integrity import read_sealed_json
    from facepipe.media.tables import FRAMES_SCHEMA, read_table, write_table
    from facepipe.faces.tracking import segments_of, track_faces

    manifest = read_sealed_json(whole / "work" / NAME / "segments" / "manifest.json")
    rng = np.random.default_rng(7)
    noisy = tmp_path / "faces"
    noisy.mkdir()
    for seg in segments_of(manifest, whole / "work" / NAME / "faces"):
        table = read_faces(seg.faces)
        table["kps"] = [np.asarray(k) + rng.normal(0, 1.5, 10) for k in table["kps"]]
        write_faces(table, noisy / seg.faces.name)
        frames = read_table(seg.frames)
        write_table([frames.to_dict("records")], noisy / seg.frames.name, FRAMES_SCHEMA)

    def jitter(sigma: float) -> float:
        table = track_faces(segments_of(manifest, noisy), track_gap=5, smoothing=sigma, shot_threshold=30,
                            metric="euclidean").tracks
        shot1 = table[table["frame"] < clip.cut]
        a = shot1[[owner(clip, r.frame, np.asarray(r.kps).reshape(5, 2)) == "A" for r in shot1.itertuples()]]
        centres = np.array([cv2.invertAffineTransform(face_align.estimate_norm(np.asarray(k).reshape(5, 2), 128))
                            @ (64, 64, 1) for k in a.sort_values("frame")["kps"]])
        return float(np.linalg.norm(np.diff(centres, n=2, axis=0), axis=1).mean())

    raw, smoothed = jitter(0), jitter(1.5)
    print(f"pasted-face jitter, mean |second difference| of its centre: {raw:.2f} px raw, {smoothed:.2f} px "
          f"with keypoint_smoothing=1.5")
    assert smoothed < 0.5 * raw


def test_segment_logs_show_progress(split, clip):
    """Every segment job logs its progress: frames done of total, frames per second, time left."""
    import re

    for rule in ("detect_faces", "render_segment"):
        log = (split / "logs" / NAME / rule / "seg_0001.log").read_text()
        lines = re.findall(rf"{rule} seg_0001: (\d+)/(\d+) frames \((\d+)%\), ([\d.]+) frames/s", log)
        assert lines, log[-2000:]
        done = [int(d) for d, *_ in lines]
        assert done == sorted(done) and done[-1] == int(lines[-1][1]) == 12
        # at least every tenth of the frames (12 frames: every frame)
        assert all(b - a <= max(1, 12 // 10) for a, b in zip([0] + done, done))
        assert "left" in log
    swap_log = (split / "logs" / NAME / "swap_faces" / "seg_0001.log").read_text()
    assert re.search(r"swap_faces seg_0001 \(frames with faces to swap\): 12/12 frames \(100%\)", swap_log)


@pytest.fixture(scope="module")
def previewed(tmp_path_factory, clip):
    wd = copy_workflow(tmp_path_factory.mktemp("preview"))
    pin_backend(wd, "offline")
    shutil.copytree(clip.path.parent, wd / "inputs")
    write_sheet(wd / "config" / "jobs.tsv", [{"name": NAME, "target": "inputs/two people.mp4",
                                              "source": "inputs/hanks.png", "segment_seconds": 2}])
    snakemake(wd, "preview")
    return wd


def swapped_persons(wd: Path, segment_frames: dict[str, dict[int, int]], tracks: Path) -> dict[int, set[int]]:
    """Video frame -> the persons whose faces the swap patched on it, from the patches of the given
    segments (segment -> its frame -> video frame) and the tracked rows they were made for."""
    from facepipe.media.patches import iter_patches
    from facepipe.media.tables import read_table

    tracked = read_table(tracks)
    person = {(r.segment, int(r.seg_frame), int(r.face)): int(r.person) for r in tracked.itertuples()}
    out: dict[int, set[int]] = {}
    for segment, video_frame in segment_frames.items():
        for frame, patches in iter_patches(wd / "work" / NAME / "swapped" / f"{segment}.parquet"):
            out.setdefault(video_frame[frame], set()).update(person[(segment, frame, p.face)] for p in patches)
    return out


def check_face_sheet(path: Path, swapped: dict[int, set[int]], fps: float) -> dict:
    """A before/after sheet (facepipe.report.face_sheet) shows, for each frame it shows, every person swapped
    on it as an enlarged face crop before and after, under a band that names the person and the frame;
    every swapped person is on it at least once, and no two of its frames are the same frame."""
    import dlib

    from facepipe.report.face_sheet import band_texts, draw_band, read_layout
    from facepipe.media.ffmpeg import carries_ai_label

    sheet = cv2.imread(str(path))
    assert sheet is not None and carries_ai_label(path)
    layout = read_layout(path)
    rows = [r for r in layout["rows"] if r["person"] is not None]
    frames = sorted({r["frame"] for r in layout["rows"]})
    assert len(frames) == len({r["frame"] for r in layout["rows"] if r["person"] is None} | {r["frame"] for r in rows})
    for frame in frames:
        assert {r["person"] for r in rows if r["frame"] == frame} == swapped.get(frame, set()), frame
    assert {r["person"] for r in rows} == set().union(*swapped.values()) != set()
    detector = dlib.get_frontal_face_detector()
    for row in rows:
        x, y, w, h = row["before"]
        ax, ay, aw, ah = row["after"]
        assert w == h == aw == ah >= 256 and ay == y and ax >= x + w and y + h <= sheet.shape[0]
        before, after = sheet[y:y + h, x:x + w], sheet[ay:ay + ah, ax:ax + aw]
        # Enlarged: the face fills a good part of the crop, at its centre (dlib finds it in the pixels).
        found = detector(cv2.cvtColor(before, cv2.COLOR_BGR2RGB), 0)
        assert found, row
        face = max(found, key=lambda r: r.height())
        assert face.height() >= 0.3 * h and abs(face.center().x - w / 2) < 0.15 * w, (row, face)
        centre = (slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4))
        assert np.abs(before[centre].astype(int) - after[centre].astype(int)).sum(axis=2).mean() > 5, row
        # The band names the person and the frame and its time, as written here (the same pixels
        # as drawing this text; a band for another person is not).
        seconds = (row["frame"] - 1) / fps
        label = f"person {row['person']}, frame {row['frame']} ({int(seconds // 60)}:{seconds % 60:04.1f})"
        band = sheet[y - layout["band"]:y]
        masks = "mask" in row  # the masks' view, a third crop (facepipe.report.face_sheet.mask_view)
        assert np.array_equal(band, draw_band(sheet.shape[1], band_texts(label, masks))), label
        other = label.replace(f"person {row['person']},", f"person {row['person'] + 1},")
        assert not np.array_equal(band, draw_band(sheet.shape[1], band_texts(other, masks)))
    return layout


def test_preview_shows_each_swapped_face_enlarged_without_the_full_run(previewed, clip):
    from facepipe.media.integrity import read_sealed_json

    plan = read_sealed_json(previewed / "work" / NAME / "preview" / "manifest.json")
    frames_at = plan["ranges"]["preview"]["frames_at"]
    swapped = swapped_persons(previewed, {"preview": dict(enumerate(frames_at, start=1))},
                              previewed / "work" / NAME / "preview" / "tracks.parquet")
    layout = check_face_sheet(previewed / "results" / f"{NAME}.preview.png", swapped, clip.fps)
    assert sorted({r["frame"] for r in layout["rows"]}) == frames_at and 3 <= len(frames_at) <= 6
    # The clip's faces are smaller than the crops: each is shown enlarged.
    assert all(r["scale"] > 1.1 for r in layout["rows"] if r["person"] is not None)
    # Only the preview's frames were swapped: no segment was swapped, rendered or muxed.
    assert not (previewed / "results" / f"{NAME}.mp4").exists()
    assert not list((previewed / "work" / NAME / "swapped").glob("seg_*"))
    assert not (previewed / "work" / NAME / "encoded").exists()
    # Both persons of the cast are in it (their best frames were chosen), and no two frames show
    # the same faces at the same place, size and pose.
    from facepipe.report.preview import frame_faces, near_identical

    assert {p for p in tracks_of(previewed, "preview")["person"]} == {1, 2}
    faces = frame_faces(tracks_of(previewed, "preview").assign(frame=lambda t: [frames_at[i - 1]
                                                                               for i in t["seg_frame"]]))
    assert not any(near_identical(faces.get(a, {}), faces.get(b, {})) for a in frames_at for b in frames_at if a < b)


def tracks_of(wd: Path, segment: str) -> pd.DataFrame:
    from facepipe.media.tables import read_table

    return read_table(wd / "work" / NAME / ("preview" if segment == "preview" else "") / "tracks.parquet")


def test_preview_reruns_only_what_it_needs(previewed):
    planned = planned_jobs(previewed, "preview", "--config", "faces=many")
    assert planned == {"swap_faces": 1, "preview_sheet": 1, "preview": 1}, planned
    planned = planned_jobs(previewed, "preview", "--config", "crf=30")
    assert planned == {}, planned


def test_qc_report_figures_and_html_report(previewed, clip):
    """After `snakemake qc`, each job has its QC figures, and Snakemake's report of that target
    holds the result, the cast, the preview and the figures, each with its caption."""
    snakemake(previewed, "qc")
    qc = previewed / "results" / "qc" / NAME
    for figure in ("before_after", "timeline", "similarity", "timings", "providers"):
        img = cv2.imread(str(qc / f"{figure}.png"))
        assert img is not None and img.shape[0] > 100, figure
    # The before/after sheet shows the result's swapped faces, enlarged, each with its person.
    from facepipe.media.integrity import read_sealed_json

    manifest = read_sealed_json(previewed / "work" / NAME / "segments" / "manifest.json")
    segments = {seg: {f: r["start"] + f for f in range(1, r["frames"] + 1)}
                for seg, r in manifest["ranges"].items() if "start" in r}
    swapped = swapped_persons(previewed, segments, previewed / "work" / NAME / "tracks.parquet")
    layout = check_face_sheet(qc / "before_after.png", swapped, clip.fps)
    assert len({r["frame"] for r in layout["rows"]}) >= 3
    identity = pd.read_csv(qc / "identity.tsv", sep="\t")
    # The source is Tom Hanks (person B in the clip): on person A's faces, the result is closer to him
    # than the target was.
    assert len(identity) > 10 and identity["after"].notna().mean() > 0.8
    assert (identity["after"] < identity["before"]).mean() > 0.8
    snakemake(previewed, "--report", "report.html", "qc")
    html = (previewed / "report.html").read_text(errors="replace")
    for name in ("timeline.png", "similarity.png", "before_after.png", "providers.png", "timings.png",
                 f"{NAME}.cast.png", f"{NAME}.preview.png", f"{NAME}.mp4"):
        assert name in html, name
    assert "reproducible face-swap workflow" in html


# -- a face passing across the frame -------------------------------------------------------------

# The astronaut's face box in scikit-image's photo (its mesh's box), and the pan across it: her face,
# EDGE_FACE px wide, slides from EDGE_OUT of it past the right edge to as much past the left edge.
EDGE_BOX = (178, 68, 273, 175)
EDGE_FACE = 120
EDGE_OUT = 0.35
EDGE_FRAMES = 40


def _edge_views(size=(480, 270)) -> list[tuple[np.ndarray, tuple[float, float, float, float]]]:
    """The pan's frames and the face's box on each (it may reach past the frame's edges)."""
    from skimage import data

    photo = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    x1, y1, x2, y2 = EDGE_BOX
    scale = EDGE_FACE / (x2 - x1)
    w, h = size
    first, last = w - (1 - EDGE_OUT) * EDGE_FACE, -EDGE_OUT * EDGE_FACE  # the face's left edge
    top = (h - scale * (y2 - y1)) / 2
    views = []
    for frame in range(EDGE_FRAMES):
        left = first + (last - first) * frame / (EDGE_FRAMES - 1)
        matrix = np.float32([[scale, 0, left - scale * x1], [0, scale, top - scale * y1]])
        img = cv2.warpAffine(photo, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        views.append((img, (left, top, left + EDGE_FACE, top + scale * (y2 - y1))))
    return views


@pytest.fixture(scope="module")
def passing(tmp_path_factory):
    """The offline backend on the pan, t1.jpg's largest face as the source: (workflow folder, the
    clip's frames, the face's boxes)."""
    from facepipe.media import demo
    from tests.track_clips import encode_clip

    wd = copy_workflow(tmp_path_factory.mktemp("passing"))
    pin_backend(wd, "offline")
    views = _edge_views()
    encode_clip(wd / "inputs" / "pan.mp4", [img for img, _ in views], EDGE_FRAMES, fps=25, size=(480, 270))
    shutil.copy(demo.insightface_image("t1.jpg"), wd / "inputs" / "group.jpg")
    write_sheet(wd / "config" / "jobs.tsv", [{"name": "pan", "target": "inputs/pan.mp4", "source": "inputs/group.jpg"}])
    snakemake(wd)
    return wd, [img for img, _ in views], [box for _, box in views]


def test_a_face_passing_across_the_frame_is_swapped_from_its_first_frame_to_its_last(passing):
    """A pan: the face comes in at the right, partly out of the frame, and leaves at the left. It is
    swapped on every frame, the first and last (0.35 of it out of the frame) as much as the others
    where it is in view: before, keypoint smoothing left the ends of a moving face's track behind it
    (the first frame unswapped), the mesh's points were clipped onto the frame's edge, and the
    occlusion test took the squashed face for a covered one."""
    wd, frames, boxes = passing
    cap = cv2.VideoCapture(str(wd / "results" / "pan.mp4"))
    changed = []
    for target, (x1, y1, x2, y2) in zip(frames, boxes):
        ok, result = cap.read()
        assert ok
        # The middle of the face box, within the frame: the share of its pixels the swap changed.
        w = x2 - x1
        box = (slice(int(y1 + 0.25 * (y2 - y1)), int(y2 - 0.1 * (y2 - y1))),
               slice(max(int(x1 + 0.2 * w), 0), min(int(x2 - 0.2 * w), target.shape[1])))
        diff = np.abs(result[box].astype(int) - target[box].astype(int)).max(axis=2)
        changed.append(float((diff > 16).mean()))
    middle = float(np.median(changed[EDGE_FRAMES // 3: 2 * EDGE_FRAMES // 3]))
    print(f"\nshare of the face's middle changed by the swap, frame by frame: {np.round(changed, 2).tolist()} "
          f"(in view: {middle:.2f})")
    assert middle > 0.3
    assert min(changed) >= 0.5 * middle, changed
