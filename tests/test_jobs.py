import pandas as pd
import pytest

from facepipe.jobs import JobError, build_jobs, content_digest, read_sheet

CONFIG = {"backend": "standin", "enhancer": "none", "faces": "one", "reference": "", "reference_threshold": 0.35,
          "source_face": -1, "max_height": 0, "fps": 0, "segment_seconds": 10, "providers": ["cuda", "cpu"],
          "precision": "fp32", "encoder": "libx264", "preset": "veryfast", "crf": 18, "target": "", "source": "",
          "name": ""}


def test_sheet_rows_override_defaults(tmp_path):
    sheet = tmp_path / "jobs.tsv"
    sheet.write_text("name\ttarget\tsource\tcrf\tproviders\tenhancer\n"
                     "007\ta.mp4\ts.png\t23\tcpu\t\n"
                     "b\tb.mp4\ts.png\t\t\tgfpgan_1.4\n")
    jobs = build_jobs(CONFIG, read_sheet(sheet))
    assert list(jobs) == ["007", "b"]  # text stays text: the leading zeros survive
    assert jobs["007"]["crf"] == 23 and jobs["007"]["providers"] == ["cpu"]
    assert jobs["007"]["enhancer"] == "none"
    assert jobs["b"]["crf"] == 18 and jobs["b"]["enhancer"] == "gfpgan_1.4"


def test_command_line_job_replaces_sheet():
    jobs = build_jobs({**CONFIG, "target": "dir/my clip.mp4", "source": "s.png"}, None)
    assert list(jobs) == ["my clip"]
    assert jobs["my clip"]["target"] == "dir/my clip.mp4"


def test_duplicate_names_and_unknown_columns_are_errors(tmp_path):
    sheet = tmp_path / "jobs.tsv"
    sheet.write_text("name\ttarget\tsource\nx\ta\tb\nx\tc\td\n")
    with pytest.raises(JobError, match="used twice"):
        build_jobs(CONFIG, read_sheet(sheet))
    sheet.write_text("name\ttarget\tsource\tcolour\nx\ta\tb\tred\n")
    with pytest.raises(JobError, match="unknown column"):
        read_sheet(sheet)


def test_reference_mode_needs_reference():
    with pytest.raises(JobError, match="reference"):
        build_jobs({**CONFIG, "faces": "reference", "target": "a.mp4", "source": "s.png"}, None)


def test_content_digest_follows_content_not_name(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"same")
    b.write_bytes(b"same")
    assert content_digest(a) == content_digest(b)
    b.write_bytes(b"different")
    assert content_digest(a) != content_digest(b)
