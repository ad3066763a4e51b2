"""What the segment stages hand each other: face tables, crops, patches, and decoded frames."""

import io

import cv2
import numpy as np
import pytest

from facepipe.media import ffmpeg, video
from facepipe.media.demo import insightface_image
from facepipe.models.face_analyzer import FaceAnalyzer, detector_size
from facepipe.faces.detection import detect_frames, read_faces, write_faces
from facepipe.media.patches import Patch, decode_image, encode_image, read_patches, write_patches
from facepipe.models.standin import build_standin


@pytest.fixture(scope="module")
def standin_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models") / "standin"
    d.mkdir()
    return {k: build_standin(k, d / f"{k}.onnx") for k in ("det_10g", "w600k_r50")}


def test_images_round_trip_exactly_and_old_png_tables_still_read():
    img = np.random.default_rng(0).integers(0, 256, (37, 53, 3), np.uint8)
    assert np.array_equal(decode_image(encode_image(img)), img)
    # Tables from before the change hold PNGs.
    png = cv2.imencode(".png", img)[1].tobytes()
    assert np.array_equal(decode_image(png), img)
    # Reading a table never unpickles (it cannot run code put there).
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        decode_image(pickled.getvalue())


def test_patch_tables_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    made = [Patch("eroded_crop", rng.integers(0, 256, (128, 128, 3), np.uint8), matrix=np.eye(2, 3), frame=1,
                  face=0, kps=np.zeros((5, 2), np.float32)),
            Patch("pixels", rng.integers(0, 256, (9, 7, 3), np.uint8), x=3, y=4, frame=1, face=1),
            Patch("eroded_crop", rng.integers(0, 256, (128, 128, 3), np.uint8), matrix=np.eye(2, 3), frame=3)]
    write_patches([made], tmp_path / "p.parquet")
    back = read_patches(tmp_path / "p.parquet")
    assert sorted(back) == [1, 3] and [p.face for p in back[1]] == [0, 1]
    for want, got in zip(made, back[1] + back[3]):
        assert got.kind == want.kind and np.array_equal(got.image, want.image)
        assert (got.x, got.y) == (want.x, want.y)


def test_detector_size_fits_the_frame():
    assert detector_size(1920, 1080, 640) == (640, 360)
    assert detector_size(1080, 1920, 640) == (360, 640)
    assert detector_size(641, 361, 640) == (640, 360)  # even, for 4:2:0


def test_a_landmark_box_crop_of_a_video_frame_is_its_own_i420_pixels():
    from facepipe.faces.detection import face_crop
    from facepipe.media.i420 import region_bgr

    rng = np.random.default_rng(3)
    i420 = rng.integers(16, 236, (90 * 3 // 2, 160), np.uint8)
    frame = video.WorkFrame(1, i420=i420)
    landmarks = np.array([[31.4, 21.7], [77.2, 20.9], [53.5, 63.1]], np.float32)  # odd corners
    row = face_crop(frame, {"landmarks": landmarks}, "landmark_box", margin=0.0625)
    x, y = row["crop_x"], row["crop_y"]
    assert x % 2 == 0 and y % 2 == 0
    stored = np.load(__import__("io").BytesIO(row["crop"]))
    assert stored.ndim == 2  # I420: half the bytes of BGR
    crop = decode_image(row["crop"])
    h, w = crop.shape[:2]
    # Exactly the pixels of the whole frame converted, where the landmarks are, with the margin.
    assert np.array_equal(crop, frame.bgr()[y:y + h, x:x + w])
    assert np.array_equal(crop, region_bgr(frame.planes(), (x, y, x + w, y + h)))
    assert x <= 31.4 - 0.0625 * 45 and x + w >= 77.2 and y + h >= 63.1
    # A still image keeps BGR crops.
    still = face_crop(video.WorkFrame(1, bgr=frame.bgr()), {"landmarks": landmarks}, "landmark_box", margin=0.0625)
    assert np.load(__import__("io").BytesIO(still["crop"])).ndim == 3


def test_detection_on_planes_finds_the_faces_the_bgr_path_finds(standin_models, tmp_path):
    img = cv2.resize(cv2.imread(str(insightface_image("t1.jpg"))), (1280, 720))
    i420 = cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420)
    bgr = cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)
    analyzer = FaceAnalyzer(standin_models["det_10g"], standin_models["w600k_r50"], ["cpu"])
    from_planes = detect_frames(analyzer, [video.WorkFrame(1, i420=i420)], crop="aligned:arcface_128:128")
    from_bgr = detect_frames(analyzer, [video.WorkFrame(1, bgr=bgr)], crop="aligned:arcface_128:128")
    assert len(from_planes) == len(from_bgr) == 1
    # The same face; the detector's input differs (fitted to 16:9, not square), so the box
    # is where the stand-in puts it for that input: inside the frame, as a real face would be.
    box = from_planes.iloc[0][["x1", "y1", "x2", "y2"]].to_numpy(float)
    assert 0 <= box[0] < box[2] <= 1280 and 0 <= box[1] < box[3] <= 720
    crop = decode_image(from_planes.iloc[0]["crop"])
    assert crop.shape == (144, 144, 3)  # the swapper's 128 px crop, with a margin for re-alignment
    # Embeddings (faces=reference) come from crops warped from the planes too.
    emb_planes = analyzer.analyze_frame(video.WorkFrame(1, i420=i420))[0]["embedding"]
    kps = analyzer.analyze_frame(video.WorkFrame(1, i420=i420))[0]["kps"]
    from insightface.utils import face_align

    emb_bgr = analyzer.recognizer.get_feat([face_align.norm_crop(bgr, kps, 112)])[0]
    cos = emb_planes @ emb_bgr / np.linalg.norm(emb_planes) / np.linalg.norm(emb_bgr)
    assert cos > 0.99
    write_faces(from_planes, tmp_path / "faces.parquet")
    assert read_faces(tmp_path / "faces.parquet")["crop"].iloc[0] == from_planes["crop"].iloc[0]


def test_the_detector_is_not_run_on_a_flat_frame(standin_models, monkeypatch):
    """A black or dark grainy frame has nothing to find: the analyzer answers without its detector;
    a frame with a face still runs it."""
    analyzer = FaceAnalyzer(standin_models["det_10g"], standin_models["w600k_r50"], ["cpu"])
    calls = []
    detect = analyzer.detector.detect
    monkeypatch.setattr(analyzer.detector, "detect", lambda *a, **k: calls.append(1) or detect(*a, **k))
    rng = np.random.default_rng(0)
    grain = np.clip(24 + rng.normal(0, 3, (1080, 1920, 1)), 0, 255).astype(np.uint8).repeat(3, axis=2)
    for bgr in (np.zeros((1080, 1920, 3), np.uint8), grain):
        frame = video.WorkFrame(1, i420=cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420))
        assert analyzer.analyze_frame(frame) == [] and calls == []
    photo = cv2.resize(cv2.imread(str(insightface_image("t1.jpg"))), (1920, 1080))
    assert len(analyzer.analyze_frame(video.WorkFrame(1, i420=cv2.cvtColor(photo, cv2.COLOR_BGR2YUV_I420)))) == 1
    assert calls == [1]


def test_repeated_frames_of_a_variable_rate_clip_own_their_planes(media_dir, tmp_path):
    vfr = tmp_path / "vfr.mp4"
    ffmpeg.run_ffmpeg(["-i", str(media_dir / "clip.mp4"), "-vf", "setpts='(N+0.4*mod(N,3))/25/TB'",
                      "-fps_mode", "passthrough", "-an", "-c:v", "libx264", str(vfr)], what="making a VFR clip")
    info = ffmpeg.probe(vfr).__dict__
    manifest = video.plan_segments(vfr, info, tmp_path / "p", max_height=0, fps=25, segment_seconds=10)
    frames = list(video.iter_frames(vfr, tmp_path / "p", manifest, "seg_0000"))
    arrays = [f.i420() for f in frames]
    repeats = [i for i in range(1, len(arrays)) if np.array_equal(arrays[i], arrays[i - 1])]
    assert repeats, "the clip should have gaps that repeat a frame"
    # Pasting into one frame in place (as the render does) must not change another.
    for i in repeats:
        assert not np.shares_memory(arrays[i], arrays[i - 1])


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_rule_jobs_keep_freed_buffers_for_reuse():
    from facepipe.workflow.rule_script import keep_freed_memory

    assert keep_freed_memory() is True


def test_tables_are_read_back_a_frame_at_a_time_even_when_a_row_group_splits_a_frame(tmp_path):
    from facepipe.media.patches import FramePatches, iter_patches, patch_row
    from facepipe.media.tables import PATCHES_SCHEMA, TableWriter, iter_frame_rows

    rng = np.random.default_rng(3)
    made = [Patch("pixels", rng.integers(0, 256, (4, 4, 3), np.uint8), frame=f, face=i)
            for f in (1, 2, 5, 6) for i in range(3)]
    with TableWriter(tmp_path / "p.parquet", PATCHES_SCHEMA, rows_per_group=2) as writer:
        for patch in made:  # one row at a time: groups of 2 rows split frames of 3
            writer.add([patch_row(patch)])
    pieces = list(iter_frame_rows(tmp_path / "p.parquet"))
    assert sum(len(p) for p in pieces) == 12
    seen = [sorted(set(p["frame"])) for p in pieces]
    assert all(not set(a) & set(b) for a, b in zip(seen, seen[1:]))  # no frame in two pieces
    assert [(f, len(ps)) for f, ps in iter_patches(tmp_path / "p.parquet")] == [(1, 3), (2, 3), (5, 3), (6, 3)]
    lookup = FramePatches(tmp_path / "p.parquet")
    assert [len(lookup.get(n) or []) for n in range(1, 8)] == [3, 3, 0, 0, 3, 3, 0]


def test_rows_without_pandas_hold_what_a_dataframe_gives(tmp_path):
    """read_rows and iter_frame_tuples give each row as DataFrame.itertuples does (the swap reads
    them so, without importing pandas): Python numbers, bytes, list columns as arrays, None for a
    null list; where= keeps only its rows."""
    from facepipe.media.tables import TRACKS_SCHEMA, TableWriter, iter_frame_tuples, read_columns, read_rows

    rng = np.random.default_rng(5)
    rows = [{"frame": f, "segment": "seg_0000" if f < 4 else "seg_0001", "seg_frame": f, "face": i,
             "filled": bool(i), "track": i, "person": i, "x1": 1.5, "y1": 2.0, "x2": 3.0, "y2": 4.0,
             "kps": rng.normal(size=10), "landmarks": None if i else rng.normal(size=936),
             "embedding": rng.normal(size=4) if f == 1 else None} for f in range(1, 7) for i in range(2)]
    with TableWriter(tmp_path / "t.parquet", TRACKS_SCHEMA, rows_per_group=3) as writer:
        for f in range(6):
            writer.add(rows[2 * f:2 * f + 2])
    for columns, where in ((None, None), (["seg_frame", "kps", "landmarks"], ("segment", "seg_0001"))):
        expected = list(read_columns(tmp_path / "t.parquet", columns, where=where).itertuples(index=False))
        got = read_rows(tmp_path / "t.parquet", columns, where=where)
        assert len(got) == len(expected) == (12 if where is None else 6)
        for a, b in zip(expected, got):
            assert a._fields == b._fields
            for x, y in zip(a, b):
                if isinstance(x, np.ndarray):
                    assert isinstance(y, np.ndarray) and y.dtype == x.dtype and np.array_equal(x, y)
                else:
                    assert type(x) is type(y) and x == y
    pieces = list(iter_frame_tuples(tmp_path / "t.parquet", ["face", "landmarks"]))
    frames = [[row.frame for row in piece] for piece in pieces]
    assert sum(frames, []) == [f for f in range(1, 7) for _ in range(2)]
    assert all(not set(a) & set(b) for a, b in zip(frames, frames[1:]))  # no frame in two pieces
    assert np.array_equal(pieces[0][0].landmarks, rows[0]["landmarks"]) and pieces[0][1].landmarks is None


def test_the_stages_write_and_read_tables_without_importing_pandas(tmp_path):
    """pandas costs a job 0.2 s to import, and pyarrow imports it on its first pa.array or
    to_numpy: the stages' modules, and their table writing and reading (faces, tracks, patches),
    do without it."""
    import subprocess
    import sys

    code = f"""
import sys
import numpy as np
import facepipe.swap.segment, facepipe.faces.detection, facepipe.faces.tracking, facepipe.workflow.rule_script
from facepipe.media.tables import (FACES_SCHEMA, TRACKS_SCHEMA, TableWriter, iter_frame_records, iter_frame_tuples,
                                   read_rows)
rows = [{{"frame": f, "face": 0, "x1": 1.0, "kps": np.ones(10), "landmarks": None, "hold": False, "crop": b"x",
         "segment": "seg_0000", "seg_frame": f, "track": 1}} for f in range(3)]
for name, schema in (("faces", FACES_SCHEMA), ("tracks", TRACKS_SCHEMA)):
    with TableWriter({str(tmp_path)!r} + "/" + name + ".parquet", schema) as writer:
        writer.add(rows)
assert len(read_rows({str(tmp_path)!r} + "/tracks.parquet", ["kps"], where=("segment", "seg_0000"))) == 3
assert sum(len(piece) for piece in iter_frame_tuples({str(tmp_path)!r} + "/faces.parquet")) == 3
assert len(list(iter_frame_records({str(tmp_path)!r} + "/faces.parquet"))) == 3
print("pandas" in sys.modules)
"""
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert found.strip() == "False"


def test_a_row_group_ends_at_its_byte_budget_with_whole_frames(tmp_path):
    """Large crops or patches end a row group before rows_per_group rows (TableWriter's
    bytes_per_group: a group is held whole in memory by its writer and by each reader), never
    inside a frame's rows."""
    import pyarrow.parquet as pq

    from facepipe.media.patches import iter_patches, patch_row
    from facepipe.media.tables import PATCHES_SCHEMA, TableWriter

    rng = np.random.default_rng(4)
    made = [Patch("pixels", rng.integers(0, 256, (100, 100, 3), np.uint8), frame=f, face=i)
            for f in range(1, 11) for i in range(2)]
    with TableWriter(tmp_path / "p.parquet", PATCHES_SCHEMA, bytes_per_group=100_000) as writer:
        for f in range(10):  # a frame's two rows at a time, each row over 30 kB
            writer.add([patch_row(p) for p in made[2 * f:2 * f + 2]])
    meta = pq.ParquetFile(tmp_path / "p.parquet").metadata
    sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    assert sum(sizes) == 20 and max(sizes) < 20 and all(n % 2 == 0 for n in sizes), sizes
    assert [(f, len(ps)) for f, ps in iter_patches(tmp_path / "p.parquet")] == [(f, 2) for f in range(1, 11)]


def test_a_failed_table_write_leaves_no_file(tmp_path):
    from facepipe.media.tables import FACES_SCHEMA, TableWriter

    with pytest.raises(RuntimeError):
        with TableWriter(tmp_path / "faces.parquet", FACES_SCHEMA) as writer:
            writer.add([])
            raise RuntimeError("detector crashed")
    assert list(tmp_path.iterdir()) == []
