"""Snakemake's locks: a live run's are never removed, a killed run's are; runs that start together.

The unit tests use real processes holding the run lock, as runs and their jobs do; the workflow test
replays the reported race: two runs started together on the same targets, then a third one while the
winner is still working, with the loser's PID left in the old owner record.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from tests.workflow_helpers import copy_workflow
from tests.workflow_helpers import pin_backend, snakemake

from facepipe.media import demo
from facepipe.workflow import locks
from tools.slurmprobe import env_for_local_snakemake

LOCK_ERROR = "Directory cannot be locked"


def _python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


HOLDER = """
import sys, time
from facepipe.workflow.locks import clear_stale_locks, hold_run_lock
if sys.argv[2] == "job":
    assert hold_run_lock(sys.argv[1])
else:
    clear_stale_locks(sys.argv[1], gate=sys.argv[2] == "gated")
print("holding", flush=True)
time.sleep(120)
"""

CLEAR = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
from facepipe.workflow.locks import clear_stale_locks
print("removed" if clear_stale_locks(sys.argv[1], gate=sys.argv[2] == "gated") else "kept", flush=True)
"""


def write_locks(base: Path) -> None:
    """The lock files a run leaves, and an owner record naming a dead PID (what the old PID-based
    check trusted)."""
    (base / "locks").mkdir(parents=True, exist_ok=True)
    (base / "locks" / "0.input.lock").write_text("inputs/clip.mp4\n")
    (base / "locks" / "0.output.lock").write_text("results/clip.mp4\n")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (base / "facepipe-lock-owner.json").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))


@pytest.fixture
def smk(tmp_path):
    base = tmp_path / ".snakemake"
    base.mkdir()
    return base


def hold(base: Path, how: str = "main") -> subprocess.Popen:
    proc = _python(HOLDER, base, how, start_new_session=True)
    assert proc.stdout.readline().strip() == "holding", proc.stderr.read()
    return proc


def clear(base: Path, gated: bool = False, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLEAR, str(base), "gated" if gated else "plain"],
                          capture_output=True, text=True, timeout=timeout)


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


@pytest.mark.parametrize("how", ["main", "job"])
def test_a_live_holder_keeps_its_locks_whatever_the_owner_record_says(smk, how):
    holder = hold(smk, how)
    write_locks(smk)
    try:
        out = clear(smk)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "kept"
        assert sorted(p.name for p in (smk / "locks").iterdir()) == ["0.input.lock", "0.output.lock"]
        assert "still working" in out.stderr and f"pid {holder.pid}" in out.stderr
    finally:
        kill(holder)


@pytest.mark.parametrize("how", ["main", "job"])
def test_a_sigkilled_holders_locks_are_removed_with_a_warning(smk, how):
    holder = hold(smk, how)
    write_locks(smk)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    out = clear(smk)
    assert out.stdout.strip() == "removed", out.stderr
    assert not list((smk / "locks").glob("*.lock"))
    assert "WARNING removed stale Snakemake lock" in out.stderr


def test_locks_with_no_run_alive_are_removed_and_a_clean_directory_is_left_alone(smk, tmp_path):
    write_locks(smk)
    assert clear(smk).stdout.strip() == "removed"
    fresh = tmp_path / "fresh" / ".snakemake"
    out = clear(fresh)
    assert out.stdout.strip() == "kept" and "WARNING" not in out.stderr  # nothing to remove
    assert (fresh / locks.RUN_LOCK).exists()


def test_the_run_that_cleared_stale_locks_then_holds_the_run_lock(smk):
    write_locks(smk)
    first = hold(smk, "main")  # finds the dead run's locks, removes them, then holds its shared lock
    try:
        assert not list((smk / "locks").glob("*.lock"))
        (smk / "locks" / "0.output.lock").write_text("results/clip.mp4\n")  # its own locks
        assert clear(smk).stdout.strip() == "kept"
    finally:
        kill(first)


def test_the_start_gate_holds_the_next_run_until_the_first_has_written_its_locks(tmp_path):
    base = tmp_path / ".snakemake"
    first = hold(base, "gated")
    second = None
    try:
        second = _python(CLEAR, base, "gated")
        time.sleep(1.5)
        assert second.poll() is None, "the second run did not wait at the gate"
        (base / "locks").mkdir()
        (base / "locks" / "0.input.lock").write_text("inputs/clip.mp4\n")  # as Snakemake: input, then output
        (base / "locks" / "0.output.lock").write_text("results/clip.mp4\n")
        out, err = second.communicate(timeout=30)
        assert out.strip() == "kept", err  # and the first run's locks are left alone
        assert "waiting for another facepipe run" in err
    finally:
        kill(first)
        if second is not None:
            kill(second)


def test_holders_names_the_processes_holding_the_run_lock(tmp_path):
    base = tmp_path / ".snakemake"
    base.mkdir()
    holder = hold(base, "job")
    try:
        assert locks.holders(base / locks.RUN_LOCK) == [holder.pid]
    finally:
        kill(holder)
    assert locks.holders(base / locks.RUN_LOCK) == []


# --- the reported race, as whole runs ---------------------------------------------------------------

def decoded_frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


SECONDS = 4
ARGS = ["--config", "target=clip.mp4", "source=astronaut.png", "name=race", "segment_seconds=1"]


def refused(stderr: str) -> bool:
    """Snakemake stopped the run before it touched anything: at the lock, or (when the other run
    had already started its jobs) at the incomplete-files check, which Snakemake makes first."""
    return LOCK_ERROR in stderr or "IncompleteFilesException" in stderr


def start_run(wd: Path, tag: str) -> tuple[subprocess.Popen, Path]:
    # Output to files, not pipes: a run's chatter must never block it.
    err = wd.parent / f"{tag}.stderr"
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "1", *ARGS], cwd=wd,
                            env=env_for_local_snakemake(), stdout=subprocess.DEVNULL, stderr=err.open("w"),
                            start_new_session=True)
    return proc, err


@pytest.mark.workflow
def test_runs_started_together_and_a_third_one_never_take_the_live_runs_locks(tmp_path, media_dir):
    clean = copy_workflow(tmp_path / "clean")
    pin_backend(clean, "standin")
    shutil.copy(media_dir / "astronaut.png", clean / "astronaut.png")
    demo.make_clip(demo.insightface_image(), clean / "clip.mp4", seconds=SECONDS, size=(320, 180))
    snakemake(clean, *ARGS)
    reference = decoded_frames(clean / "results/race.mp4")
    assert len(reference) == SECONDS * 25

    wd = copy_workflow(tmp_path / "race")
    pin_backend(wd, "standin")
    for f in ("astronaut.png", "clip.mp4"):
        shutil.copy(clean / f, wd / f)
    runs = [start_run(wd, "one"), start_run(wd, "two")]
    try:
        deadline = time.time() + 300
        while all(p.poll() is None for p, _ in runs):
            assert time.time() < deadline, "neither run stopped"
            time.sleep(0.1)
        (loser, loser_err), = [r for r in runs if r[0].poll() is not None]
        (winner, winner_err), = [r for r in runs if r[0] is not loser]
        assert loser.returncode != 0 and refused(loser_err.read_text()), loser_err.read_text()[-3000:]
        assert winner.poll() is None, "the winning run finished too soon for the test; make its job longer"
        # What the report found on disk: the loser's PID in the owner record the old check trusted.
        (wd / ".snakemake" / "facepipe-lock-owner.json").write_text(
            json.dumps({"pid": loser.pid, "host": socket.gethostname()}))

        third, third_err = start_run(wd, "three")
        runs.append((third, third_err))
        third.wait(timeout=300)
        assert winner.poll() is None, "the winning run finished before the third run decided; make it longer"
        assert third.returncode != 0 and refused(third_err.read_text()), third_err.read_text()[-3000:]
        assert "removed stale" not in third_err.read_text()
        assert list((wd / ".snakemake" / "locks").glob("*.lock")), "the live run's locks are gone"

        assert winner.wait(timeout=600) == 0, winner_err.read_text()[-4000:]
    finally:
        for proc, _ in runs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    result = decoded_frames(wd / "results/race.mp4")
    assert len(result) == len(reference)
    assert all(np.array_equal(a, b) for a, b in zip(result, reference))
