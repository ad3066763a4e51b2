"""A user's mistakes stop the run before any job, each with one line naming the file or key, the
problem and the fix: no traceback, no Snakemake error banner, and no detection or other job run.

Each case runs the workflow for real (not a dry run) on one copy with the stand-in backend, as a
first run: no model made yet."""

from __future__ import annotations

import shutil
import subprocess

import cv2
import numpy as np
import pytest
from tests.workflow_helpers import copy_workflow
from tests.workflow_helpers import pin_backend, snakemake, write_sheet

# What Snakemake prints around an error it reports itself, and Python around an uncaught one.
BANNERS = ("Traceback", "Error in rule", "Exception", "WorkflowError", "Exiting because", 'File "',
           "ValidationError", "Failed validating")
SHEET = "config/jobs.tsv"


@pytest.fixture(scope="module")
def wd(tmp_path_factory, media_dir):
    wd = copy_workflow(tmp_path_factory.mktemp("mistakes") / "wf")
    pin_backend(wd, "standin")
    inputs = wd / "inputs"
    inputs.mkdir()
    shutil.copy(media_dir / "silent.mp4", inputs / "clip.mp4")
    shutil.copy(media_dir / "astronaut.png", inputs / "astronaut.png")
    cv2.imwrite(str(inputs / "no face.png"), np.full((240, 240, 3), 128, np.uint8))
    return wd


def row(**cells) -> dict:
    return {"name": "clip", "target": "inputs/clip.mp4", "source": "inputs/astronaut.png", **cells}


def run_sheet(wd, rows: list[dict], *args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    write_sheet(wd / SHEET, rows)
    if prefix:  # a command around Snakemake (a private read-only mount)
        import sys

        from tools.slurmprobe import env_for_local_snakemake

        return subprocess.run([*prefix, sys.executable, "-m", "snakemake", "--cores", "2", *args], cwd=wd,
                              capture_output=True, text=True, timeout=300, env=env_for_local_snakemake())
    return snakemake(wd, *args, check=False, timeout=300)


def assert_stopped_with(proc: subprocess.CompletedProcess, wd, *expected: str) -> str:
    """The run failed with exactly one facepipe line holding each expected part, nothing else
    that reports an error, and no job started (Snakemake prints 'rule NAME:' for each)."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    lines = [line for line in out.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and lines[0].startswith("facepipe: error: "), out[-3000:]
    for part in expected:
        assert part in lines[0], (part, lines[0])
    for banner in BANNERS:
        assert banner not in out, (banner, out[-3000:])
    assert "rule " not in out and "checkpoint " not in out, out[-3000:]
    assert not (wd / "work").exists() and not (wd / "logs").exists(), "a job ran"
    return lines[0]


@pytest.mark.parametrize("models", ["first run", "models made"])
def test_source_without_a_face_stops_before_detection(wd, models):
    """On a first run the job's models are made for the check in the run's temporary folder; once
    their rules made them, those are used (and the check's record is the embedding cache's)."""
    folder = wd / "resources" / "models" / "standin"
    if models == "models made":
        from facepipe.models.standin import build_standin

        for key, file in (("det_10g", "det_10g.onnx"), ("w600k_r50", "w600k_r50.onnx")):
            build_standin(key, folder / file)
    try:
        proc = run_sheet(wd, [row(source="inputs/no face.png")])
        assert_stopped_with(proc, wd, "job 'clip', source:", "no face found in image 'inputs/no face.png'",
                            "use a photo with a clearly visible face")
    finally:
        shutil.rmtree(wd / "resources" / "models", ignore_errors=True)
    assert not (wd / "resources" / "embeddings").exists() or models == "models made"


def test_missing_target(wd):
    proc = run_sheet(wd, [row(target="inputs/nothing here.mp4")])
    assert_stopped_with(proc, wd, "no such file: 'inputs/nothing here.mp4'", "fix the target path")


def test_target_path_with_a_trailing_space(wd):
    proc = run_sheet(wd, [row(target="inputs/clip.mp4 ")])
    assert_stopped_with(proc, wd, "no such file: 'inputs/clip.mp4 ' (note the trailing space)")


def test_unreadable_target(wd):
    (wd / "inputs" / "folder.mp4").mkdir(exist_ok=True)
    proc = run_sheet(wd, [row(target="inputs/folder.mp4")])
    assert_stopped_with(proc, wd, "'inputs/folder.mp4' is a folder, not a file")


@pytest.mark.parametrize("content, problem", [(b"", "is empty (0 bytes)"),
                                              (b"a shopping list, not a video\n" * 40, "is not a readable video")],
                         ids=["empty", "text"])
def test_target_that_is_not_a_video(wd, content, problem):
    (wd / "inputs" / "broken.mp4").write_bytes(content)
    proc = run_sheet(wd, [row(target="inputs/broken.mp4")])
    assert_stopped_with(proc, wd, "target file 'inputs/broken.mp4'", problem)


def test_bad_option_value_names_key_value_and_allowed_values(wd):
    proc = run_sheet(wd, [row()], "--config", "faces=all")
    assert_stopped_with(proc, wd, "configuration key 'faces': 'all' is not allowed",
                        "allowed values: one, many, reference")
    proc = run_sheet(wd, [row(crf=99)])
    assert_stopped_with(proc, wd, "jobs sheet 'config/jobs.tsv' row 1, column 'crf': 99 is not allowed",
                        "a whole number from 0 to 63")


def test_misspelled_key_without_snakemakes_location(wd):
    proc = run_sheet(wd, [row()], "--config", "enhacer=gfpgan_1.4")
    assert_stopped_with(proc, wd, "unknown configuration key 'enhacer'", "did you mean 'enhancer'?")


@pytest.mark.parametrize("name, problem", [("job{1}", "may not contain braces"),
                                           ('"line\nbreak"', "may not contain a line break")])
def test_job_names_snakemake_cannot_use(wd, name, problem):
    proc = run_sheet(wd, [row(name=name)])
    assert_stopped_with(proc, wd, problem, "rename the job")


def test_read_only_results_folder(wd):
    (wd / "results").mkdir(exist_ok=True)
    try:
        if shutil.which("unshare") and subprocess.run(["unshare", "-rm", "true"]).returncode == 0:
            # A read-only file system on results/, in a private mount namespace: nothing outside sees it.
            proc = run_sheet(wd, [row()], prefix=("unshare", "-rm", "sh", "-c",
                                                  'mount -t tmpfs -o ro tmpfs results && exec "$@"', "sh"))
        else:
            pytest.skip("needs unshare (user and mount namespaces) for a read-only results/")
        assert_stopped_with(proc, wd, "results/", "is on a read-only file system", "make it writable")
    finally:
        (wd / "results").rmdir()


# --- unit: several faces in a source photo -------------------------------------------------------

def test_several_faces_say_which_is_used(tmp_path, monkeypatch, astronaut):
    """check_face_photos (what the run calls while it plans) names the photo, the number of faces
    and the face used; the record is cached, so the photo is analysed once."""
    from facepipe.faces import embedding
    from facepipe.models.alignment import template_points
    from facepipe.workflow.preflight import check_face_photos

    calls = []

    class ThreeFaces:
        def analyze(self, img):
            calls.append(1)
            # Three faces the size of the astronaut's (a 200 px aligned crop: not too small to swap).
            kps = template_points("arcface_128", 200.0) + (150.0, 100.0)
            return [{"embedding": np.ones(4, np.float32), "box": np.zeros(4), "kps": kps, "score": 0.9}
                    for _ in range(3)]

    monkeypatch.setattr(embedding, "make_analyzer", lambda *a, **k: ThreeFaces())  # as face_record calls it
    photo = tmp_path / "group photo.png"
    cv2.imwrite(str(photo), astronaut)
    det, rec = tmp_path / "det.onnx", tmp_path / "rec.onnx"
    det.write_bytes(b"d")
    rec.write_bytes(b"r")
    job = {"source": str(photo), "source_face": -1, "backend": "standin", "faces": "one", "map": ""}
    for _ in range(2):
        lines = check_face_photos("x", job, det, rec, cache_dir=tmp_path / "cache")
        assert lines == [f"job 'x': the source {str(photo)!r} shows 3 faces: using the largest (face 0); "
                         f"set source_face=N to use another (0 = the largest)"]
    assert len(calls) == 1
    lines = check_face_photos("x", dict(job, source_face=2), det, rec, cache_dir=tmp_path / "cache")
    assert "using face 2" in lines[0]


def test_lint_neither_checks_photos_nor_finds_lints(wd):
    """The photo check costs a detector run: only a run (or dry run) that plans jobs makes it."""
    proc = run_sheet(wd, [row(source="inputs/no face.png")], "--lint")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "in a good condition" in out and "no face" not in out, out[-3000:]
