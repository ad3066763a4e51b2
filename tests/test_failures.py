"""Failures: one clear line, nothing left behind, and a retry only where it can help.

Rule scripts run through facepipe.workflow.rule_script.run. Unit tests call it with a stand-in for Snakemake's
`snakemake` object; workflow tests run the stand-in backend on a one-second clip.
"""

import errno
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from tests.workflow_helpers import copy_workflow, fault_env
from snakemake.iocontainers import Namedlist, Wildcards

from facepipe import gpu
from facepipe.media import ffmpeg, files
from facepipe.workflow import rule_script
from tools.slurmprobe import env_for_local_snakemake
from facepipe.media.tables import PATCHES_SCHEMA, TableWriter
from facepipe.media.video import SegmentWriter

ORDER = ["fp16", "resolution", "no_enhancer"]


@pytest.fixture
def here(tmp_path, monkeypatch):
    """A job's working directory (rule scripts use relative paths); the logging and OpenCV state that
    rule_script.run sets up for a rule process is put back afterwards."""
    import cv2

    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level, threads = list(root.handlers), root.level, cv2.getNumThreads()
    yield tmp_path
    for h in root.handlers:
        if h not in handlers:
            h.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    cv2.setNumThreads(threads)


def fake_sm(rule="swap_faces", attempt=1, outputs=None, inputs=None, segment="seg_0000"):
    wildcards = {"name": "job", "segment": segment}
    outputs = outputs or {"patches": f"work/job/swapped/{segment}.parquet"}
    resources = {"gpu": 0, "attempt": attempt} if attempt else {}
    return SimpleNamespace(
        rule=rule, threads=1, wildcards=Wildcards(fromdict=wildcards),
        log=Namedlist(fromdict={"log": f"logs/job/{rule}/{segment}.log"}),
        resources=Namedlist(fromdict=resources), output=Namedlist(fromdict=outputs),
        input=Namedlist(fromdict=inputs or {}),
        params=SimpleNamespace(degrade=ORDER, min_free_gpu_mb=0))


def run(sm, main, capsys) -> tuple[int, str, str]:
    """rule_script.run's exit code, console (stderr) and log file."""
    code = 0
    try:
        rule_script.run(sm, main)
    except SystemExit as exc:
        code = exc.code
    log = Path(sm.log[0])
    return code, capsys.readouterr().err, log.read_text() if log.exists() else ""


def error_lines(console: str) -> list[str]:
    return [line for line in console.splitlines() if line.strip()]


def leftovers(root: Path) -> list[Path]:
    return [p for p in Path(root).rglob("*") if ".tmp" in p.name or ".partial" in p.name]


def full_disk(*_):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# --- unexpected errors and the retry decision ------------------------------------------------------

def test_an_unexpected_error_is_one_console_line_and_a_traceback_in_the_log(here, capsys):
    def main(sm, log):
        log.info("working")
        {}["missing key"]

    code, console, logtext = run(fake_sm(), main, capsys)
    assert code == 1
    lines = error_lines(console)
    assert len(lines) == 1, console
    assert lines[0].startswith("ERROR in rule swap_faces (job, seg_0000): KeyError: 'missing key'")
    assert "logs/job/swap_faces/seg_0000.log" in lines[0]
    assert "Traceback (most recent call last)" in logtext and 'in main' in logtext


def test_an_expected_error_is_one_line_without_a_traceback(here, capsys):
    def main(sm, log):
        raise files.MediaError("target file 'x.mp4' is empty (0 bytes)")

    code, console, logtext = run(fake_sm(rule="prepare_target", attempt=None), main, capsys)
    assert code == 1
    assert error_lines(console) == [
        "ERROR in rule prepare_target (job, seg_0000): target file 'x.mp4' is empty (0 bytes) "
        "(details in logs/job/prepare_target/seg_0000.log)"]
    assert "Traceback" not in logtext and "is empty" in logtext


def test_a_failure_other_than_memory_is_not_retried(here, capsys):
    calls = []

    def failing(sm, log):
        calls.append(rule_script.gpu_start(sm))
        raise ValueError("bad landmarks")

    code, console, _ = run(fake_sm(attempt=1), failing, capsys)
    assert code == 1 and "ValueError: bad landmarks" in console
    record = gpu.read_failure("work/job/failures/swap_faces-seg_0000.json")
    assert record["kind"] == gpu.ERROR and record["message"] == "ValueError: bad landmarks"

    for attempt in (2, 3):
        code, console, logtext = run(fake_sm(attempt=attempt), failing, capsys)
        assert code == 1
        assert len(calls) == 1, "a retry after an ordinary failure did work"
        (line,) = error_lines(console)
        assert "ValueError: bad landmarks" in line and "not retried" in line
        assert "attempt 1 failed" in line
    assert not list(Path("work/job").glob("degradations/*.json"))
    # Each attempt adds to the log: the first attempt's traceback is still there.
    assert "Traceback" in logtext and "not retried" in logtext


def test_out_of_memory_is_retried_degraded(here, capsys):
    seen = []

    def main(sm, log):
        degradation = rule_script.gpu_start(sm)
        seen.append(degradation.steps)
        if sm.resources.get("attempt") == 1:
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory for "
                               "requested buffer of size 536870912")

    code, console, _ = run(fake_sm(attempt=1), main, capsys)
    assert code == 1 and "out of memory" in console and "runs degraded" in console
    assert gpu.read_failure("work/job/failures/swap_faces-seg_0000.json")["kind"] == gpu.OOM
    code, console, _ = run(fake_sm(attempt=2), main, capsys)
    assert code == 0, console
    assert seen == [[], ["fp16"]]
    assert not Path("work/job/failures/swap_faces-seg_0000.json").exists()  # success clears it
    assert Path("work/job/degradations/swap_faces-seg_0000.json").exists()


def test_a_first_attempt_ignores_the_failure_record_of_an_earlier_run(here, capsys):
    gpu.record_failure("work/job/failures/swap_faces-seg_0000.json", "swap_faces", 1, gpu.ERROR, "old")
    code, _, _ = run(fake_sm(attempt=1), lambda sm, log: rule_script.gpu_start(sm), capsys)
    assert code == 0
    assert not Path("work/job/failures/swap_faces-seg_0000.json").exists()


# --- full disk -----------------------------------------------------------------------------------

def test_full_disk_in_a_table_writer_is_one_line_and_leaves_nothing(here, capsys, monkeypatch):
    # Finished outputs of the same stage beside this one: the estimate's basis.
    Path("work/job/swapped").mkdir(parents=True)
    for i, size in ((1, 3_000_000), (2, 5_000_000), (3, 4_000_000)):
        Path(f"work/job/swapped/seg_000{i}.parquet").write_bytes(b"\0" * size)

    def main(sm, log):
        rule_script.gpu_start(sm)
        with TableWriter(sm.output.patches, PATCHES_SCHEMA, rows_per_group=1) as writer:
            row = {"frame": 0, "face": 0, "kind": "swap", "x": 0, "y": 0, "matrix": [1.0], "kps": [1.0],
                   "image": b"x" * 100_000}
            writer.add([row])
            monkeypatch.setattr(writer._writer, "write_table", full_disk)
            writer.add([row])

    code, console, logtext = run(fake_sm(), main, capsys)
    assert code == 1
    (line,) = error_lines(console)
    assert line.startswith("ERROR in rule swap_faces (job, seg_0000): no space left on device writing "
                           "work/job/swapped/seg_0000.parquet: this stage writes about 4.0 MB (an estimate")
    assert " free now on " in line and " were free when it started" in line
    assert not leftovers(here)
    assert gpu.read_failure("work/job/failures/swap_faces-seg_0000.json")["kind"] == gpu.DISK_FULL
    # The retry fails at once with the same line, and nothing degrades.
    code, console, _ = run(fake_sm(attempt=2), main, capsys)
    assert code == 1 and "no space left on device" in console and "not retried" in console
    assert not list(Path("work/job").glob("degradations/*.json"))


@pytest.mark.parametrize("writer", ["json", "dir", "mkstemp", "npz"])
def test_full_disk_removes_temporaries_a_writer_left_behind(here, capsys, writer):
    """Writers that do not clean up after themselves on every path (write_json's .tmp, a directory
    output's .partial, a model's mkstemp file): the rule's temporaries are removed all the same."""
    out = {"json": "work/job/probe.json", "dir": "work/job/segments", "mkstemp": "resources/models/m.onnx",
           "npz": "work/job/source_embedding.npz"}[writer]

    def main(sm, log):
        if writer == "dir":
            with files.atomic_output_dir(out) as partial:
                (partial / "manifest.json").write_text("{}")
                full_disk()
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + {"json": ".tmp", "mkstemp": ".x1y2.tmp", "npz": ".4242.tmp.npz"}[writer])
        tmp.write_bytes(b"\0" * 200_000)
        full_disk()

    code, console, logtext = run(fake_sm(rule="prepare_target", attempt=None, outputs={"out": out}), main, capsys)
    assert code == 1
    (line,) = error_lines(console)
    assert f"no space left on device writing {out}:" in line
    assert not leftovers(here), leftovers(here)
    if writer != "dir":  # a directory output now removes its own .partial
        assert "removed temporary" in logtext


def test_a_temporary_older_than_the_attempt_is_left_alone(here, capsys):
    """Only this attempt's temporaries go: an older file of that name may belong to someone else."""
    old = Path("results/clip.partial.mp4")
    old.parent.mkdir()
    old.write_bytes(b"someone's")
    os.utime(old, (1, 1))
    code, _, _ = run(fake_sm(rule="mux_video", attempt=None, outputs={"video": "results/clip.mp4"}),
                     lambda sm, log: full_disk(), capsys)
    assert code == 1 and old.exists()


def test_ffmpeg_saying_no_space_left_is_a_full_disk(here, capsys):
    def main(sm, log):
        raise files.MediaError("ffmpeg failed while encoding seg_0000.mp4 (exit 1): [out#0/mp4 @ 0x5] Error "
                               "writing trailer: No space left on device")

    code, console, _ = run(fake_sm(rule="render_segment", attempt=None,
                                   outputs={"video": "work/job/encoded/seg_0000.mp4"}), main, capsys)
    (line,) = error_lines(console)
    assert "no space left on device writing work/job/encoded/seg_0000.mp4" in line


def test_disk_quota_is_reported_as_such(here, capsys):
    def main(sm, log):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), "work/job/swapped/seg_0000.parquet.tmp")

    _, console, _ = run(fake_sm(), main, capsys)
    assert "disk quota exceeded writing work/job/swapped/seg_0000.parquet.tmp" in console


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs: a real full disk (needs root; skipped elsewhere)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_real_full_disk_under_the_table_writer_and_ffmpeg(tiny_disk, here, capsys, monkeypatch):
    monkeypatch.chdir(tiny_disk)
    rng = np.random.default_rng(0)

    def tables(sm, log):
        with TableWriter(sm.output.patches, PATCHES_SCHEMA, rows_per_group=1) as writer:
            for i in range(100):
                writer.add([{"frame": i, "face": 0, "kind": "swap", "x": 0, "y": 0, "matrix": [1.0], "kps": [1.0],
                             "image": rng.bytes(20_000)}])

    def tables_full_at_close(sm, log):
        # One row group, written when the writer closes: the full disk hits close(), where
        # AtomicWriter does not abort (the writer's .tmp stays; the rule's cleanup removes it).
        with TableWriter(sm.output.patches, PATCHES_SCHEMA, rows_per_group=10**6) as writer:
            for i in range(10):
                writer.add([{"frame": i, "face": 0, "kind": "swap", "x": 0, "y": 0, "matrix": [1.0], "kps": [1.0],
                             "image": rng.bytes(20_000)}])

    for main in (tables, tables_full_at_close):
        code, console, _ = run(fake_sm(), main, capsys)
        assert code == 1
        (line,) = error_lines(console)
        assert "no space left on device writing work/job/swapped/seg_0000.parquet" in line, line
        assert f"free now on {tiny_disk}" in line
        assert not leftovers(tiny_disk)
        # The space came back (no descriptor kept the removed temporary alive): the cause is recorded.
        assert gpu.read_failure("work/job/failures/swap_faces-seg_0000.json")["kind"] == gpu.DISK_FULL
        Path(fake_sm().log[0]).unlink()

    def encode(sm, log):
        with SegmentWriter(sm.output.video, width=320, height=240, fps="25/1", encoder="libx264",
                           preset="ultrafast", crf=0) as writer:
            for _ in range(50):
                writer.write(rng.integers(0, 255, 320 * 240 * 3 // 2, dtype=np.uint8))

    code, console, _ = run(fake_sm(rule="render_segment", attempt=None,
                                   outputs={"video": "work/job/encoded/seg_0000.mp4"}), encode, capsys)
    assert code == 1
    (line,) = error_lines(console)
    assert "no space left on device writing work/job/encoded/seg_0000.mp4" in line, line
    assert not leftovers(tiny_disk)


# --- whole runs -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wd(tmp_path_factory, media_dir):
    wd = copy_workflow(tmp_path_factory.mktemp("failures"))
    config = wd / "config" / "config.yaml"
    text = config.read_text()
    assert "\nbackend: auto\n" in text
    config.write_text(text.replace("\nbackend: auto\n", "\nbackend: standin\n"))
    shutil.copy(media_dir / "silent.mp4", wd / "clip.mp4")
    shutil.copy(media_dir / "astronaut.png", wd / "astronaut.png")
    return wd


def run_workflow(wd, name, **env):
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--config", "target=clip.mp4",
                           "source=astronaut.png", f"name={name}", "segment_seconds=1"], cwd=wd,
                          capture_output=True, text=True, timeout=600, env={**env_for_local_snakemake(), **env})


@pytest.mark.workflow
def test_a_run_whose_swap_fails_otherwise_than_memory_fails_once_with_its_cause(wd):
    proc = run_workflow(wd, "broken", **fault_env(FACEPIPE_TEST_INJECT_FAILURE="swap_faces"))
    assert proc.returncode != 0
    assert "ERROR in rule swap_faces (broken, seg_0000): ValueError: injected failure in swap_faces" in proc.stderr
    assert "not retried" in proc.stderr
    log = (wd / "logs/broken/swap_faces/seg_0000.log").read_text()
    assert "Traceback (most recent call last)" in log
    assert not list((wd / "work/broken").glob("degradations/*.json"))
    assert "degraded" not in log
    assert not (wd / "results/broken.mp4").exists()


@pytest.mark.workflow
def test_a_run_that_fills_the_disk_says_so_in_one_line_and_is_not_retried(wd):
    proc = run_workflow(wd, "full", **fault_env(FACEPIPE_TEST_INJECT_FAILURE="detect_faces:enospc"))
    assert proc.returncode != 0
    assert "ERROR in rule detect_faces (full, seg_0000): no space left on device writing " \
           "work/full/faces/seg_0000.parquet: " in proc.stderr
    assert "free now on" in proc.stderr and "not retried" in proc.stderr
    assert not list((wd / "work/full").glob("degradations/*.json"))
    assert not leftovers(wd / "work/full")


@pytest.mark.workflow
def test_a_real_full_disk_in_a_run_is_one_line_and_leaves_no_partial(wd, tmp_path):
    encoded = wd / "work/tinydisk/encoded"
    encoded.mkdir(parents=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(encoded)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        proc = run_workflow(wd, "tinydisk")
        assert proc.returncode != 0
        assert "ERROR in rule render_segment (tinydisk, seg_0000): no space left on device writing " \
               "work/tinydisk/encoded/seg_0000.mp4: " in proc.stderr, proc.stderr[-3000:]
        assert f"free now on {encoded}" in proc.stderr
        assert not leftovers(encoded)
    finally:
        subprocess.run(["umount", "-l", str(encoded)], check=False)


@pytest.mark.workflow
def test_an_empty_degradation_record_does_not_fail_a_finished_run(wd):
    # As a full disk leaves it (the old record writer wrote in place).
    records = wd / "work/earlier/degradations"
    records.mkdir(parents=True)
    (records / "swap_faces-seg_0000.json").write_text("")
    proc = run_workflow(wd, "finished")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ignoring unreadable degradation record work/earlier/degradations/swap_faces-seg_0000.json (empty)" \
        in proc.stderr
    assert ffmpeg.probe(wd / "results/finished.mp4").frames == 25


def test_every_expected_error_scripting_names_exists():
    """scripting looks the expected errors up among the loaded modules by name (importing them
    would tie every stage's code version to them): a renamed class must not silently drop out."""
    import importlib

    for module, name in rule_script._EXPECTED_ERRORS:
        assert issubclass(getattr(importlib.import_module(module), name), Exception), (module, name)
    assert len(rule_script._expected_errors()) == len(rule_script._EXPECTED_ERRORS)


def test_a_rule_process_that_succeeded_ends_at_once_with_its_log_and_output_written(tmp_path):
    """In the process Snakemake starts for a script (`snakemake` a global of __main__), a job that
    succeeded leaves without tearing the interpreter down (exit handlers do not run), and what it
    wrote is all there; called from anywhere else (every test above), run() returns."""
    script = tmp_path / "job.py"
    script.write_text(
        "import atexit, sys\n"
        "from tests.test_failures import fake_sm\n"
        "from facepipe.workflow.rule_script import run\n"
        "atexit.register(lambda: open('torn_down', 'w').close())\n"
        "snakemake = fake_sm(rule='track_faces', attempt=None)\n"
        "def main(sm, log):\n"
        "    log.info('made it')\n"
        "    print('to the log file too')\n"
        "    open('out.txt', 'w').write('done')\n"
        "run(snakemake, main)\n"
        "sys.exit(3)  # never reached\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out.txt").read_text() == "done"
    logged = (tmp_path / "logs/job/track_faces/seg_0000.log").read_text()
    assert "made it" in logged and "to the log file too" in logged
    assert not (tmp_path / "torn_down").exists()
