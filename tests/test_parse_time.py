"""Reading the workflow does no work: --lint, --report and a dry run write nothing in the working
directory and start no process; only a real run's main process checks, probes and writes, once it
plans (rules/common.smk: plan_run, plan_job).

Every process Python starts (subprocess, fork), every ffmpeg started through the package, and
every NVML initialisation is recorded by a sitecustomize module and a stand-in pynvml put first on
the PYTHONPATH of the Snakemake process and its children.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
from tests.workflow_helpers import planned_jobs, snakemake, standin_job

from facepipe.workflow import runmode

SITECUSTOMIZE = r'''
import os, subprocess, sys, traceback

_LOG = os.environ["FACEPIPE_TEST_PROCESS_LOG"]


def _origin():
    """'workflow' when the workflow's code (facepipe, the Snakefile, rules/*.smk, a rule script)
    is on the stack, else the file of the outermost frame inside a package (who started it)."""
    stack = traceback.extract_stack()
    for frame in stack:
        name = frame.filename
        if "/facepipe/" in name or name.endswith((".smk", "Snakefile")) or "/scripts/" in name:
            return "workflow"
    inside = [f.filename for f in stack if "site-packages" in f.filename and "/subprocess.py" not in f.filename]
    return "other:" + (inside[-1].split("site-packages/")[-1] if inside else stack[0].filename)


def _record(kind, what):
    with open(_LOG, "a") as fh:
        fh.write(f"{os.getpid()}\t{kind}\t{what}\t{_origin()}\n")


_popen_init = subprocess.Popen.__init__


def _init(self, args, *a, **k):
    _record("process", args if isinstance(args, str) else " ".join(map(str, args)))
    _popen_init(self, args, *a, **k)


subprocess.Popen.__init__ = _init
os.register_at_fork(before=lambda: _record("fork", ""))
'''

PYNVML = '''
import os


class NVMLError(Exception):
    pass


def nvmlInit():
    with open(os.environ["FACEPIPE_TEST_PROCESS_LOG"], "a") as fh:
        fh.write(f"{os.getpid()}\\tnvml\\tnvmlInit\\tworkflow\\n")
    raise NVMLError("no GPU (test stand-in)")
'''

FFMPEG = """#!/bin/sh
printf '%s\\tffmpeg\\t%s\\tworkflow\\n' "$$" "$*" >> "$FACEPIPE_TEST_PROCESS_LOG"
exec "{real}" "$@"
"""


@pytest.fixture(scope="module")
def recorder(tmp_path_factory):
    """Environment that records processes, ffmpeg calls and NVML calls into a log file."""
    import imageio_ffmpeg

    folder = tmp_path_factory.mktemp("recorder")
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    (folder / "pynvml.py").write_text(PYNVML)
    ffmpeg = folder / "ffmpeg"
    ffmpeg.write_text(FFMPEG.format(real=imageio_ffmpeg.get_ffmpeg_exe()))
    ffmpeg.chmod(0o755)
    log = folder / "calls.log"
    repo = Path(__file__).resolve().parents[1]
    path = os.pathsep.join([str(folder), str(repo), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {"PYTHONPATH": path, "FACEPIPE_TEST_PROCESS_LOG": str(log), "IMAGEIO_FFMPEG_EXE": str(ffmpeg)}
    return env, log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def tree(wd: Path) -> dict[str, tuple]:
    """Every file and folder under wd: its kind, size and mtime (ns)."""
    found = {}
    for root, dirs, files in os.walk(wd):
        for name in dirs + files:
            path = Path(root) / name
            st = path.lstat()
            found[str(path.relative_to(wd))] = (path.is_dir(), 0 if path.is_dir() else st.st_size, st.st_mtime_ns)
    return found


# What Snakemake itself makes in .snakemake/ whenever it builds a job graph: its Persistence
# creates its folders, and a dry run saves its file inventory for the next run (snakemake/dag.py:
# `if self.workflow.dryrun: self.workflow.persistence.save_iocache()`, .snakemake/iocache/latest.pkl).
# Its logger writes .snakemake/log/TIME.snakemake.log for every command but a dry run, --lint and
# --report included (snakemake/logging.py: setup_logfile, "enable_file_logging and not dryrun").
# Anything else, facepipe's own caches and locks under .snakemake/ included, counts as written.
SNAKEMAKES_OWN = ("auxiliary", "conda", "conda-archive", "incomplete", "iocache", "locks", "log", "metadata",
                  "shadow", "singularity")


def written(before: dict, after: dict) -> list[str]:
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    own = lambda p: p == ".snakemake" or p.split(os.sep)[:2] in ([".snakemake", d] for d in SNAKEMAKES_OWN)  # noqa: E731
    # A folder's mtime changes when something in it is added or removed: that shows as that thing.
    return [p for p in changed if not own(p) and not (before.get(p, (False,))[0] and after.get(p, (False,))[0])]


@pytest.fixture(scope="module")
def jobs(tmp_path_factory, media_dir):
    """A finished job, an unfinished one (only its plan made) and a fresh one (nothing made yet);
    each test works on copies."""
    base = tmp_path_factory.mktemp("parse")
    inputs = {"clip.mp4": media_dir / "silent.mp4", "face.png": media_dir / "astronaut.png"}
    row = {"name": "clip", "target": "inputs/clip.mp4", "source": "inputs/face.png"}
    finished = standin_job(base / "finished", inputs, row)
    snakemake(finished)
    unfinished = standin_job(base / "unfinished", inputs, row)
    snakemake(unfinished, "work/clip/segments")
    fresh = standin_job(base / "fresh", inputs, row)
    return {"finished": finished, "unfinished": unfinished, "fresh": fresh}


@pytest.mark.workflow
@pytest.mark.parametrize("which", ["finished", "unfinished", "fresh"])
def test_lint_report_dry_run_and_job_processes_write_nothing_and_start_no_process(jobs, which, recorder, tmp_path):
    env, log = recorder
    log.unlink(missing_ok=True)
    wd = Path(shutil.copytree(jobs[which], tmp_path / "wf", symlinks=True))
    before = tree(wd)
    planned = planned_jobs(wd, env=env)
    assert bool(planned) == (which != "finished"), planned
    assert written(before, tree(wd)) == []
    proc = snakemake(wd, "--lint", env=env)
    assert "in a good condition" in proc.stdout + proc.stderr
    assert written(before, tree(wd)) == []
    report = tmp_path / "report.html"
    proc = snakemake(wd, "--report", str(report), env=env, check=False)
    if which == "finished":
        assert proc.returncode == 0 and report.stat().st_size > 0, proc.stderr[-3000:]
    else:  # Snakemake's own answer for a result not made yet
        assert "results/clip.mp4 marked for report but does not exist" in proc.stderr, proc.stderr[-3000:]
    assert written(before, tree(wd)) == []
    # A job's own process, as Snakemake starts it locally (subprocess) or on a cluster node (remote),
    # up to where the rule's script would start.
    for mode in ("subprocess", "remote"):
        snakemake(wd, "--mode", mode, "--target-jobs", "detect_faces:name=clip,segment=seg_0000",
                  "--allowed-rules", "detect_faces", "--force", "--dry-run", env=env)
        assert written(before, tree(wd)) == []
    # Nothing started by the workflow's code, no NVML call and no ffmpeg. (Snakemake and its plugins
    # start a few of their own whatever the workflow: the SLURM plugin's `which sacct` when it is
    # loaded, platform's `uname -p`; their origin names the package.)
    ours = [c for c in calls(log) if not c.split("\t")[3].startswith("other:snakemake")]
    assert ours == [], ours


@pytest.mark.workflow
def test_a_run_checks_probes_and_writes_in_its_plan(jobs, recorder, tmp_path):
    """The counterpart: a real run's main process makes its checks (ffmpeg's encoder check), probes
    the GPU once, and writes its stamps and caches."""
    env, log = recorder
    log.unlink(missing_ok=True)
    wd = Path(shutil.copytree(jobs["unfinished"], tmp_path / "wf", symlinks=True))
    shutil.rmtree(wd / "work" / "clip" / "stamps")
    snakemake(wd, "work/clip/probe.json", "--config", "crf=30", env=env)
    made = calls(log)
    assert sum("\tnvml\t" in c for c in made) == 1, made
    assert any("\tffmpeg\t" in c and "lavfi" in c for c in made), made
    assert (wd / "work" / "clip" / "stamps" / "prepare_target.json").is_file()
    assert (wd / ".snakemake" / "facepipe" / "code_versions.json").is_file()


def test_run_mode_reads_snakemakes_own_state():
    class Workflow:
        is_main_process, executor_plugin, dryrun, dag_settings = True, None, False, None

    w = Workflow()
    assert runmode.run_mode(w) == runmode.READING  # the Snakefile being read; --lint
    w.dag_settings = object()
    assert runmode.run_mode(w) == runmode.GRAPH_ONLY  # --report, --dag
    w.executor_plugin = object()
    assert runmode.run_mode(w) == runmode.RUN
    w.dryrun = True
    assert runmode.run_mode(w) == runmode.DRY_RUN
    w.is_main_process = False
    assert runmode.run_mode(w) == runmode.JOB


def test_the_recorder_sees_processes_and_nvml(recorder, tmp_path):
    """The test's own instruments work: a process started from Python and an NVML call are logged."""
    import subprocess

    env, log = recorder
    before = len(calls(log))
    code = textwrap.dedent("""
        import subprocess
        from facepipe.gpu import nvml_memory_mb
        from facepipe.media.ffmpeg import ffmpeg_exe
        assert nvml_memory_mb() is None
        subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, check=True)
    """)
    subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, check=True, cwd=tmp_path)
    new = calls(log)[before:]
    assert any("\tnvml\t" in c for c in new) and any("\tprocess\t" in c for c in new)
    assert any("\tffmpeg\t-version" in c for c in new), new


def test_onsuccess_cancels_only_the_schedulers_own_timers():
    """release_scheduler_timers (rules/common.smk) cancels the timers Snakemake's scheduler starts
    (its own _schedule_reevalutation, called here on a stand-in scheduler), and no other timer."""
    import threading
    from types import SimpleNamespace

    from snakemake.scheduling.job_scheduler import JobScheduler

    scheduler = SimpleNamespace(_open_jobs=threading.Semaphore(0))
    JobScheduler._schedule_reevalutation(scheduler, 30)
    other = threading.Timer(30, lambda: None)
    other.start()
    try:
        found = runmode.timers_of(scheduler)
        assert len(found) == 1 and found[0] is not other
        found[0].cancel()
        assert runmode.timers_of(scheduler) in ([], found)  # cancelled: it ends at once
        assert other.is_alive()
    finally:
        other.cancel()
