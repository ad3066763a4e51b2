"""An unexpected exception in a rule script puts its traceback into the rule's log, wherever in
the script it is raised: while the script imports (before facepipe.workflow.rule_script.run is called), in
its main(), or in a thread. Real Snakemake runs of the prepare_target rule, its script broken on purpose.
"""

from __future__ import annotations

import shutil

import pytest
from tests.workflow_helpers import snakemake, standin_job

pytestmark = pytest.mark.workflow

SCRIPT = "scripts/prepare_target.py"
LOG = "logs/clip/prepare_target.log"
TARGET = "work/clip/probe.json"


@pytest.fixture(scope="module")
def wd(tmp_path_factory, media_dir):
    return standin_job(tmp_path_factory.mktemp("tracebacks") / "wf",
                       {"clip.mp4": media_dir / "silent.mp4", "face.png": media_dir / "astronaut.png"},
                       {"name": "clip", "target": "inputs/clip.mp4", "source": "inputs/face.png"})


def _fails_with_traceback_in_log(wd, edit, *expected: str) -> str:
    """Run the plan with its script changed by edit(text); returns the log after checking that the
    run failed, the log holds a traceback with the expected lines, and the console one line."""
    script = wd / SCRIPT
    original = script.read_text()
    shutil.rmtree(wd / "logs", ignore_errors=True)
    script.write_text(edit(original))
    try:
        proc = snakemake(wd, TARGET, check=False)
    finally:
        script.write_text(original)
    assert proc.returncode != 0
    log = (wd / LOG).read_text()
    assert "Traceback (most recent call last)" in log, log
    for line in expected:
        assert line in log, f"{line!r} not in the log:\n{log}"
    assert "ERROR in rule prepare_target" in proc.stderr
    # The console names the cause in one line: the tracebacks it shows are the log's (Snakemake
    # prints a failed job's log: show-failed-logs in profiles/default), none of its own.
    console = proc.stdout + proc.stderr
    assert console.count("Traceback (most recent call last)") == log.count("Traceback (most recent call last)")
    return log


def _insert_before(anchor: str, code: str):
    """An edit of the script: code inserted before the first occurrence of anchor."""
    return lambda text: text.replace(anchor, code + anchor, 1)


def test_an_import_that_fails_before_facepipe_scripting_is_imported(wd):
    """The script's first import fails: facepipe's __init__ has installed the hook by then."""
    log = _fails_with_traceback_in_log(wd, _insert_before("from ", "from facepipe.media.files import no_such_name\n"),
                                       "ImportError: cannot import name 'no_such_name'", "prepare_target.py")
    assert "unexpected error in the rule script in rule prepare_target" in log


def test_an_exception_at_the_scripts_top_level_after_the_imports(wd):
    edit = _insert_before("def main(", "raise RuntimeError('broken at import')\n\n\n")
    _fails_with_traceback_in_log(wd, edit, "RuntimeError: broken at import", "prepare_target.py")


def test_an_exception_in_main(wd):
    edit = _insert_before("    info = probe(", "    raise KeyError('in main')\n")
    log = _fails_with_traceback_in_log(wd, edit, "KeyError: 'in main'", "in main\n")
    assert "rule prepare_target, wildcards" in log  # written by run()'s logging, before the traceback


def test_an_exception_in_a_thread_is_logged_too(wd):
    """A worker thread's exception does not fail the job by itself; it must still be in the log."""
    edit = _insert_before("    info = probe(", "    import threading\n"
                                                 "    t = threading.Thread(target=lambda: 1 / 0, name='worker')\n"
                                                 "    t.start()\n    t.join()\n"
                                                 "    raise RuntimeError('after the thread')\n")
    _fails_with_traceback_in_log(wd, edit, "ZeroDivisionError", "in thread worker", "RuntimeError: after the thread")


def test_an_untouched_script_runs(wd):
    """The hook changes nothing for a script that does not fail (and the edits above were undone)."""
    snakemake(wd, TARGET)
    assert (wd / TARGET).is_file()
