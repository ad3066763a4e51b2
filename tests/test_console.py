"""The console of a run: each job's progress lines, named by job, and none of the noise (a shell
command of None after every job, LiteRT's delegate line, the backend=auto lines twice)."""

from __future__ import annotations

import logging
import os
import re
from types import SimpleNamespace

import pytest
import yaml
from tests.workflow_helpers import REPO, copy_workflow
from tests.workflow_helpers import snakemake


@pytest.fixture()
def as_job_clip(monkeypatch):
    """A rule script's process of job 'clip' (facepipe.workflow.rule_script.rule_job); the root logger, which
    setup_logging replaces, put back after."""
    from facepipe.workflow import rule_script

    job = SimpleNamespace(wildcards=SimpleNamespace(items=lambda: [("name", "clip"), ("segment", "seg_0000")]))
    monkeypatch.setattr(rule_script, "rule_job", lambda: job)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield rule_script.setup_logging
    for handler in root.handlers:
        handler.close()
    root.handlers[:], root.level = handlers, level


def test_progress_lines_reach_the_console_named_by_job(as_job_clip, tmp_path, capsys):
    from facepipe.progress import Progress

    logfile = tmp_path / "job.log"
    log = as_job_clip(logfile)  # now, while capsys holds sys.stderr
    log.info("an info line for the log only")
    with Progress(2, "detect_faces seg_0000", logging.getLogger("facepipe.faces.detection")) as progress:
        progress.update(2)
    log.warning("a warning")
    err = capsys.readouterr().err.splitlines()
    progress_line = r"\d\d:\d\d:\d\d clip: detect_faces seg_0000: 2/2 frames \(100%\), [\d.]+ frames/s"
    assert re.fullmatch(progress_line, err[0]), err
    assert len(err) == 2 and "WARNING facepipe.rule: a warning" in err[1]
    text = logfile.read_text()
    assert "an info line for the log only" in text and "detect_faces seg_0000: 2/2 frames" in text


def test_native_stderr_goes_to_the_log(capfd, caplog):
    from facepipe.models.face_mesh import native_stderr_to_log

    with caplog.at_level(logging.INFO, logger="native-test"):
        with native_stderr_to_log(logging.getLogger("native-test")):
            os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    assert "XNNPACK" not in capfd.readouterr().err
    assert "LiteRT: INFO: Created TensorFlow Lite XNNPACK delegate for CPU." in caplog.text


def test_the_profile_prints_no_shell_commands():
    profile = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    assert not profile.get("printshellcmds")


def test_the_backend_auto_lines_come_once(tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    proc = snakemake(wd, "--dry-run")
    out = proc.stdout + proc.stderr
    assert out.count("backend OFFLINE runs") == 1, out[-3000:]
