import pytest

from facepipe.workflow.jobs import JobError, build_jobs, read_sheet

CONFIG = {"backend": "standin", "enhancer": "none", "faces": "one", "reference": "", "reference_threshold": 0.35,
          "source_face": -1, "max_height": 0, "fps": 0, "segment_seconds": 10, "providers": ["cuda", "cpu"],
          "precision": "fp32", "batch_size": 8, "encoder": "libx264", "preset": "veryfast", "crf": 18,
          "target": "", "source": "", "name": ""}


def test_sheet_rows_override_defaults(tmp_path):
    sheet = tmp_path / "jobs.tsv"
    sheet.write_text("name\ttarget\tsource\tcrf\tproviders\tenhancer\tbatch_size\n"
                     "007\ta.mp4\ts.png\t23\tcpu\t\t1\n"
                     "b\tb.mp4\ts.png\t\t\tgfpgan_1.4\t\n")
    jobs = build_jobs(CONFIG, read_sheet(sheet))
    assert list(jobs) == ["007", "b"]  # text stays text: the leading zeros survive
    assert jobs["007"]["crf"] == 23 and jobs["007"]["providers"] == ["cpu"]
    assert jobs["007"]["enhancer"] == "none"
    assert jobs["b"]["crf"] == 18 and jobs["b"]["enhancer"] == "gfpgan_1.4"
    assert (jobs["007"]["batch_size"], jobs["b"]["batch_size"]) == (1, 8)


def test_command_line_job_replaces_sheet():
    jobs = build_jobs({**CONFIG, "target": "dir/my clip.mp4", "source": "s.png"}, None)
    assert list(jobs) == ["my clip"]
    assert jobs["my clip"]["target"] == "dir/my clip.mp4"


def test_duplicate_names_and_unknown_columns_are_errors(tmp_path):
    sheet = tmp_path / "jobs.tsv"
    sheet.write_text("name\ttarget\tsource\nx\ta\tb\nx\tc\td\n")
    with pytest.raises(JobError, match="would both write"):
        build_jobs(CONFIG, read_sheet(sheet))
    sheet.write_text("name\ttarget\tsource\tcolour\nx\ta\tb\tred\n")
    with pytest.raises(JobError, match="unknown column"):
        read_sheet(sheet)


def test_reference_mode_needs_reference():
    with pytest.raises(JobError, match="reference"):
        build_jobs({**CONFIG, "faces": "reference", "target": "a.mp4", "source": "s.png"}, None)



def test_embedding_cache_key_follows_content_not_name(tmp_path):
    from facepipe.faces.embedding import cache_path

    det, rec = tmp_path / "det.onnx", tmp_path / "rec.onnx"
    det.write_bytes(b"detector")
    rec.write_bytes(b"recognizer")
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"same")
    b.write_bytes(b"same")
    assert cache_path(tmp_path, a, det, rec, -1) == cache_path(tmp_path, b, det, rec, -1)
    b.write_bytes(b"different")
    assert cache_path(tmp_path, a, det, rec, -1) != cache_path(tmp_path, b, det, rec, -1)
    before = cache_path(tmp_path, a, det, rec, -1)
    rec.write_bytes(b"another recognizer")  # a different model never reuses the embedding
    assert cache_path(tmp_path, a, det, rec, -1).parent != before.parent


def test_mask_options_per_row_of_the_sheet(tmp_path):
    sheet = tmp_path / "jobs.tsv"
    sheet.write_text("name\ttarget\tsource\tface_mask\tmask_padding\tmask_regions\tmask_blur\n"
                     "a\ta.mp4\ts.png\tbox,mouth\t0,0,10,0\tskin,nose\t0.5\n"
                     "b\tb.mp4\ts.png\t\t\t\t\n")
    defaults = {**CONFIG, "face_mask": ["box", "occlusion"], "mask_padding": [0, 0, 0, 0],
                "mask_regions": ["skin"], "mask_blur": 0.3}
    jobs = build_jobs(defaults, read_sheet(sheet))
    assert jobs["a"]["face_mask"] == ["box", "mouth"] and jobs["a"]["mask_padding"] == [0.0, 0.0, 10.0, 0.0]
    assert jobs["a"]["mask_regions"] == ["skin", "nose"] and jobs["a"]["mask_blur"] == 0.5
    assert jobs["b"]["face_mask"] == ["box", "occlusion"] and jobs["b"]["mask_blur"] == 0.3
