"""The QC report's readers of benchmark files and logs (facepipe.report.qc)."""

from facepipe.report.qc import providers, stage_timings


def test_stage_timings_sum_segments_and_keep_the_largest_memory(tmp_path):
    bench = tmp_path / "benchmarks" / "job"
    header = "s\th:m:s\tmax_rss\tmax_vms\n"
    for seg, (s, rss) in {"seg_0000": (2.5, 300), "seg_0001": (1.5, 500)}.items():
        (bench / "detect_faces").mkdir(parents=True, exist_ok=True)
        (bench / "detect_faces" / f"{seg}.tsv").write_text(header + f"{s}\t0:00:02\t{rss}\t900\n")
    (bench / "track_faces.tsv").write_text(header + "0.5\t0:00:00\t120\t400\n")
    table = stage_timings(bench).set_index("rule")
    assert table.loc["detect_faces", "seconds"] == 4.0 and table.loc["detect_faces", "max_rss_mb"] == 500
    assert table.loc["detect_faces", "jobs"] == 2 and table.loc["track_faces", "seconds"] == 0.5


def test_providers_are_read_from_the_rules_logs(tmp_path):
    logs = tmp_path / "logs" / "job"
    (logs / "swap_faces").mkdir(parents=True)
    line = "2026-11-30 INFO facepipe.models.runtime: resources/models/inswapper_128.onnx runs on {} (requested x)\n"
    (logs / "swap_faces" / "seg_0000.log").write_text(line.format("CUDAExecutionProvider"))
    fallback = "resources/models/inswapper_128.onnx runs on CPUExecutionProvider, not on the requested X\n"
    (logs / "swap_faces" / "seg_0001.log").write_text(line.format("CPUExecutionProvider") + fallback)
    table = providers(logs)
    assert sorted(zip(table["model"], table["provider"], table["jobs"])) == [
        ("inswapper_128.onnx", "CPUExecutionProvider", 1), ("inswapper_128.onnx", "CUDAExecutionProvider", 1)]


def _tracked(rows):
    import numpy as np
    import pandas as pd

    out = []
    for frame, person, x, size, filled in rows:
        kps = np.array([[0.35, 0.45], [0.65, 0.45], [0.5, 0.6], [0.38, 0.75], [0.62, 0.75]]) * size + (x, 50)
        out.append({"frame": frame, "person": person, "filled": filled, "x1": x, "y1": 50.0, "x2": x + size,
                    "y2": 50.0 + size, "kps": kps.ravel().tolist()})
    return pd.DataFrame(out)


def test_sheet_frames_differ_and_skip_filled_frames():
    """A still stretch of video gives one frame of the sheet; a moving one several; a frame whose
    face was filled over a detector miss is not chosen while others are there."""
    from facepipe.report.preview import choose_frames

    still = [(f, 1, 100.0, 80.0, False) for f in range(1, 51)]
    moving = [(f, 1, 100.0 + 4 * (f - 50), 80.0, f == 75) for f in range(51, 101)]
    persons = [{"person": 1, "presence": 1.0, "thumbnail": {"segment": "seg_0000", "frame": 10}}]
    frames = choose_frames(_tracked(still + moving), persons, {"seg_0000": 0}, 100, count=6)
    assert 10 in frames and sum(f <= 50 for f in frames) == 1 and len(frames) >= 4 and 75 not in frames
    # Nothing moves at all: one frame, not six copies of it.
    assert choose_frames(_tracked(still), persons, {"seg_0000": 0}, 50, count=6) == [10]


def test_face_sheet_rows_enlarge_each_face_and_name_its_person(tmp_path):
    import numpy as np

    from facepipe.report.face_sheet import CROP, SheetFace, read_layout, write_face_sheet
    from facepipe.media.ffmpeg import carries_ai_label

    before = np.full((270, 480, 3), 90, np.uint8)
    after = before.copy()
    after[60:120, 200:250] = 200
    faces = [SheetFace(7, 2, (200.0, 60.0, 250.0, 120.0)), SheetFace(7, 5, (20.0, 150.0, 80.0, 260.0))]
    layout = write_face_sheet([(7, before, after, faces), (9, before, before, [])], 25.0, tmp_path / "s heet.png")
    assert carries_ai_label(tmp_path / "s heet.png") and read_layout(tmp_path / "s heet.png") == layout
    rows = layout["rows"]
    assert [(r["frame"], r["person"]) for r in rows] == [(7, 2), (7, 5), (9, None)]
    assert rows[0]["label"] == "person 2, frame 7 (0:00.2)" and rows[2]["label"] == "frame 9 (0:00.3): no face swapped"
    # A 60 px face in a square of 1.8 times its side, scaled to CROP px.
    assert rows[0]["region"][2] == 108 and rows[0]["scale"] == round(CROP / 108, 3)
    sheet = __import__("cv2").imread(str(tmp_path / "s heet.png"))
    x, y, w, h = rows[0]["after"]
    centre = sheet[y + h // 2 - 20:y + h // 2 + 20, x + w // 2 - 20:x + w // 2 + 20]
    assert w == h == CROP and (centre > 180).all()  # the changed face, enlarged, at the crop's centre


def test_a_crowd_keeps_every_person_within_the_row_limit():
    import numpy as np

    from facepipe.report.face_sheet import MAX_FACES, SheetFace, face_sheet

    img = np.zeros((90, 160, 3), np.uint8)
    frames = [(f, img, img, [SheetFace(f, p, (10.0 * p, 10.0, 10.0 * p + 20, 30.0)) for p in range(1, 7)])
              for f in (1, 5, 9)]
    frames[2][3].append(SheetFace(9, 7, (5.0, 50.0, 25.0, 70.0)))  # a person seen only in the last frame
    _, layout = face_sheet(frames, 25.0)
    shown = [(r["frame"], r["person"]) for r in layout["rows"]]
    assert len(shown) == MAX_FACES and layout["left_out"] == 19 - MAX_FACES
    assert {p for _, p in shown} == set(range(1, 8)) and shown == sorted(shown)


def test_face_sheet_shows_what_the_masks_kept(tmp_path):
    """The masks' debug view: a third crop tints what the swap's masks kept of the target."""
    import numpy as np

    from facepipe.report.face_sheet import CROP, SheetFace, kept_map, write_face_sheet
    from facepipe.media.patches import Patch

    before = np.full((270, 480, 3), 90, np.uint8)
    after = before.copy()
    after[60:120, 200:250] = 200
    # A pixels patch over the face whose mask kept its left half as the target's.
    mask = np.full((60, 50), 255, np.uint8)
    mask[:, :25] = 0
    patch = Patch(kind="pixels", image=after[60:120, 200:250].copy(), x=200, y=60, mask=mask)
    kept = kept_map([patch], before.shape[:2])
    assert kept[90, 210] == 1.0 and kept[90, 240] == 0.0 and kept[10, 10] == 0.0
    assert kept_map([Patch(kind="pixels", image=patch.image, x=200, y=60)], before.shape[:2]) is None
    faces = [SheetFace(7, 2, (200.0, 60.0, 250.0, 120.0))]
    layout = write_face_sheet([(7, before, after, faces, kept)], 25.0, tmp_path / "sheet.png")
    row = layout["rows"][0]
    assert row["mask"][2] == CROP and 0.05 < row["kept_share"] < 0.5
    sheet = __import__("cv2").imread(str(tmp_path / "sheet.png"))
    x, y, w, h = row["mask"]
    left, right = sheet[y + h // 2, x + w // 2 - 30], sheet[y + h // 2, x + w // 2 + 30]
    assert left[0] > left[1] + 40  # the kept half tinted (blue-magenta)
    assert abs(int(right[0]) - int(right[1])) < 10  # the swapped half as it is
    # No masks anywhere: two crops per row, as before.
    plain = write_face_sheet([(7, before, after, faces)], 25.0, tmp_path / "plain.png")
    assert "mask" not in plain["rows"][0]


def test_a_crop_past_the_frame_is_grey_and_past_a_kept_map_keeps_nothing():
    import numpy as np

    from facepipe.report.face_sheet import crop_face

    region = (-40, -40, 100)  # a face at the frame's corner: the crop reaches past two edges
    assert (crop_face(np.zeros((90, 160, 3), np.uint8), region)[:20, :20] == 128).all()
    assert crop_face(np.zeros((90, 160), np.float32), region).max() == 0
