"""The glue every rule script uses: logging into the rule's log file and clear failures.

A rule script that fails says so in one console line naming the rule, its wildcards and the cause;
the full story (a traceback, for anything unexpected) is in the rule's log file. That holds for an
exception raised anywhere in the script's process, not only in its main(): importing this module
in a rule script (the package's __init__ does so as soon as the script imports any facepipe module)
installs a sys.excepthook and a threading.excepthook that put what nothing caught into the log.
Whatever fails, the temporary files of the job's outputs are removed, and a full disk is reported
with the path, the space the stage needs and the space free (facepipe.workflow.disk_space). GPU
rules, which Snakemake retries, record the cause so a retry can tell running out of memory (degrade
and try again) from anything else (fail again at once, doing nothing); see facepipe.gpu.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

import cv2

from facepipe import gpu
from facepipe.workflow.disk_space import disk_full_error, disk_full_message, free_bytes, megabytes, remove_temporaries
from facepipe.workflow.locks import hold_run_lock

# Errors whose message says all a user needs (no traceback): (module, class). Looked up among the
# modules already loaded, not imported here: an exception can only come from a loaded module, and
# importing them all would make every stage's code version (facepipe.workflow.provenance) depend on them.
_EXPECTED_ERRORS = (
    ("facepipe.media.files", "MediaError"), ("facepipe.workflow.jobs", "JobError"),
    ("facepipe.models.face_analyzer", "FaceError"),
    ("facepipe.models.download", "ChecksumError"), ("facepipe.models.download", "ModelUnavailableError"),
    ("facepipe.gpu", "GpuMemoryError"), ("facepipe.models.classic_swap", "SwapError"),
    ("facepipe.models.dlib_face", "OfflineModelError"), ("facepipe.media.integrity", "DamagedIntermediateError"),
)


def _expected_errors() -> tuple[type[BaseException], ...]:
    found = (getattr(sys.modules.get(module), name, None) for module, name in _EXPECTED_ERRORS)
    return tuple(cls for cls in found if isinstance(cls, type) and issubclass(cls, BaseException))


class _NotFileOnly(logging.Filter):
    """Keeps records logged with extra={"file_only": True} (tracebacks) off the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "file_only", False)


class _WarningsAndProgress(logging.Filter):
    """Keeps the console to warnings, errors and the lines marked for it (facepipe.progress.CONSOLE:
    progress), when everything goes to the log file anyway."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or getattr(record, "console", False)


class _ConsoleFormatter(logging.Formatter):
    """A progress line on the console is short and names its job (several run at once):
    '10:12:03 demo: detect_faces seg_0000: 50/100 frames (50%), 12.0 frames/s, 4 s left'."""

    def __init__(self, fmt: str, job: str):
        super().__init__(fmt)
        self.job = job

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "console", False) and record.levelno < logging.WARNING:
            return f"{self.formatTime(record, '%H:%M:%S')} {self.job}{record.getMessage()}"
        return super().format(record)


def setup_logging(logfile: str | Path | None) -> logging.Logger:
    """Everything to the rule's log file; warnings, errors and progress lines to the console as
    well (but not what is logged with extra={"file_only": True}: tracebacks, which the console's
    one line names)."""
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.INFO)
    text = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if logfile:
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(logfile, mode="w", encoding="utf-8")
        fh.setFormatter(logging.Formatter(text))
        root.addHandler(fh)
    sm = rule_job()
    name = dict(sm.wildcards.items()).get("name") if sm is not None else None
    sh = logging.StreamHandler(sys.stderr)
    sh.setLevel(logging.INFO)
    sh.setFormatter(_ConsoleFormatter(text, f"{name}: " if name else ""))
    if logfile:
        sh.addFilter(_NotFileOnly())
        sh.addFilter(_WarningsAndProgress())
    root.addHandler(sh)
    # ONNX Runtime and insightface print to stdout; keep that in the log, not the console.
    return logging.getLogger("facepipe.rule")


def _attempt(sm) -> int:
    return int(sm.resources.get("attempt", 1) or 1)


def failure_record(sm) -> Path | None:
    """Where a retried rule's attempt records why it failed (None for rules Snakemake does not retry)."""
    if sm.resources.get("attempt") is None or not sm.wildcards.get("name"):
        return None
    segment = sm.wildcards.get("segment", "all")
    return Path("work") / sm.wildcards.name / "failures" / f"{sm.rule}-{segment}.json"


def gpu_start(sm):
    """Degradation for this attempt of a GPU rule (see facepipe.gpu), recorded for the run summary."""

    segment = sm.wildcards.get("segment", "all")
    record = Path("work") / sm.wildcards.name / "degradations" / f"{sm.rule}-{segment}.json"
    attempt = _attempt(sm)
    failures = failure_record(sm)
    previous = {} if failures is None or attempt == 1 else {"previous": gpu.read_failure(failures)}
    return gpu.start(sm.rule, attempt, list(sm.params.degrade), int(sm.params.min_free_gpu_mb), record=record,
                     **previous)


# --- full disk -------------------------------------------------------------------------------------


# --- temporaries ----------------------------------------------------------------------------------


def keep_freed_memory(limit_mb: int = 64) -> bool:
    """Let glibc's malloc reuse freed buffers instead of returning them to the system.

    Every frame passes through a few buffers of about 3 MB (a decoded frame, the detector's
    input blob). By default glibc maps each such buffer fresh and unmaps it when freed, so
    every frame pays for thousands of page faults: measured here, a quarter of detection's
    CPU time. Buffers under limit_mb now come from the heap, and up to 4 * limit_mb of freed
    memory is kept for reuse. Returns False where this is not glibc (nothing changes).
    """
    try:
        # lazy: imported only on the path that needs it
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, limit_mb << 20)
                    and libc.mallopt(M_TRIM_THRESHOLD, 4 * limit_mb << 20))
    except (OSError, AttributeError):
        return False


def _where(sm) -> str:
    values = [str(v) for v in sm.wildcards]
    return f" ({', '.join(values)})" if values else ""


# --- what nothing caught ---------------------------------------------------------------------------

def rule_job():
    """The `snakemake` object of the rule script this process runs (Snakemake defines it in the
    script, which runs as __main__), or None outside a rule script."""
    sm = getattr(sys.modules.get("__main__"), "snakemake", None)
    return sm if hasattr(sm, "rule") and hasattr(sm, "log") and hasattr(sm, "wildcards") else None


def _write_to_log(logfile: str, text: str) -> None:
    """Add text to the rule's log: through the log's handler when logging writes it (its own file
    position would otherwise write over what is added beside it), else at the file's end."""
    target = os.path.abspath(logfile)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and handler.baseFilename == target:
            logging.getLogger("facepipe.rule").error("%s", text, extra={"file_only": True})
            handler.flush()
            return
    Path(logfile).parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "a", encoding="utf-8") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} ERROR facepipe.rule: {text}\n")


def _report_uncaught(exc: BaseException, where: str) -> bool:
    """Traceback to the rule's log, one line to the console; False when there is no rule log to
    take it (not a rule script, a rule without log:, or a log that cannot be written)."""
    sm = rule_job()
    logfile = str(sm.log[0]) if sm is not None and len(sm.log) else None
    if logfile is None:
        return False
    detail = "".join(traceback.format_exception(exc)).rstrip()
    try:
        _write_to_log(logfile, f"unexpected error {where} in rule {sm.rule}:\n{detail}")
    except Exception:  # whatever stops the log from taking it: the console gets the traceback
        return False
    print(f"ERROR in rule {sm.rule}{_where(sm)}: {_cause(exc)} (uncaught {where}; details in {logfile})",
          file=sys.stderr)
    return True


def _excepthook(exc_type, exc, tb) -> None:
    if not _report_uncaught(exc.with_traceback(tb), "in the rule script"):
        _previous_excepthook(exc_type, exc, tb)


def _thread_excepthook(args) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return _previous_thread_excepthook(args)
    name = args.thread.name if args.thread is not None else "?"
    if not _report_uncaught(args.exc_value, f"in thread {name}"):
        _previous_thread_excepthook(args)


_previous_excepthook, _previous_thread_excepthook = sys.excepthook, threading.excepthook
if rule_job() is not None:
    sys.excepthook, threading.excepthook = _excepthook, _thread_excepthook


def run(snakemake, main: Callable) -> None:
    """Run a rule's main(snakemake, log). Any failure exits 1 with one console line naming the rule
    and the cause (and, for an unexpected error, its traceback in the rule's log file); the job's
    temporary files are removed; a retried rule records the cause for its next attempt."""

    sm = snakemake
    began = time.time() - 1.0  # file times are coarse on some file systems
    attempt = _attempt(sm)
    logfile = sm.log[0] if len(sm.log) else None
    log = setup_logging(logfile)
    log.info("rule %s, wildcards %s, threads %s, attempt %d", sm.rule, dict(sm.wildcards.items()),
             sm.threads, attempt)
    # This job belongs to a live run for as long as it works, even if its run's main process is
    # killed: no later run may take the run's locks for stale meanwhile (facepipe.workflow.locks).
    hold_run_lock(".snakemake")
    outputs, inputs = [str(o) for o in sm.output], [str(i) for i in sm.input]
    tail = f" (details in {logfile})" if logfile else ""

    def fail(message: str, *, detail: str = "") -> None:
        log.error("%s", message, extra={"file_only": True})
        if detail:
            log.error("%s", detail, extra={"file_only": True})
        print(f"ERROR in rule {sm.rule}{_where(sm)}: {message}{tail}", file=sys.stderr)
        sys.exit(1)

    failures = failure_record(sm)
    if failures is not None:
        if attempt == 1:
            failures.unlink(missing_ok=True)  # a record from an earlier run
        else:
            previous = gpu.read_failure(failures)
            if previous is not None and previous["kind"] != gpu.OOM:
                # Snakemake retries every failure; only running out of memory is worth it. Snakemake
                # removed the failed attempt's log, so its traceback comes back from the record.
                if previous.get("detail"):
                    log.error("attempt %s failed:\n%s", previous.get("attempt", attempt - 1), previous["detail"],
                              extra={"file_only": True})
                fail(f"{previous['message']} (attempt {previous.get('attempt', attempt - 1)} failed with this; not "
                     f"retried, as only running out of GPU memory is)")
            if previous is not None:
                log.warning("attempt %d failed for lack of memory: %s", attempt - 1, previous["message"])

    # Which GPU the scheduler gave this job (unset for CPU jobs); cluster tests read this line.
    log.info("CUDA_VISIBLE_DEVICES=%s", os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
    # OpenCV's own thread pool follows the job's threads too: jobs share the cores the
    # scheduler counted, and oversubscribed pools spend their time waiting on each other.

    cv2.setNumThreads(max(1, int(sm.threads)))
    keep_freed_memory()
    free_at_start = free_bytes(outputs[0]) if outputs else None
    stream = open(logfile, "a", encoding="utf-8") if logfile else contextlib.nullcontext(sys.stdout)
    try:
        watch = gpu.MemoryWatch() if sm.resources.get("gpu") else contextlib.nullcontext()
        with stream as out, contextlib.redirect_stdout(out), watch:
            main(sm, log)
    except Exception as exc:
        detail = "".join(traceback.format_exception(exc)).rstrip()
        # The traceback's frames still reference the failed writers, and through them open files:
        # an unlinked temporary takes its space back only once its last descriptor is closed.
        for e in gpu.exception_chain(exc):
            traceback.clear_frames(e.__traceback__)
        gc.collect()
        for tmp, size in remove_temporaries(outputs, began):
            # In the log only: the console gets the one line that says what failed.
            log.warning("removed temporary %s (%s) left by the failed job", tmp, megabytes(size),
                        extra={"file_only": True})
        full = disk_full_error(exc)
        if full is not None:
            kind, message = gpu.DISK_FULL, disk_full_message(full, outputs, inputs, free_at_start)
            expected = False
        elif gpu.is_out_of_memory(exc):
            kind, message = gpu.OOM, f"out of memory: {_cause(exc)}"
            expected = isinstance(exc, _expected_errors())
        elif isinstance(exc, _expected_errors()):
            kind, message, expected = gpu.ERROR, str(exc), True
        else:
            kind, message, expected = gpu.ERROR, _cause(exc), False
        # An expected error's message says it all; anything else keeps its traceback in the log.
        detail = "" if expected else detail
        if failures is not None:
            try:
                gpu.record_failure(failures, sm.rule, attempt, kind, message, detail)
            except OSError as record_exc:
                log.warning("could not record the failure in %s: %s", failures, record_exc, extra={"file_only": True})
        if failures is not None and kind == gpu.OOM:
            message += " [the next attempt, if any, runs degraded]"
        fail(message, detail=detail)
    if failures is not None:
        failures.unlink(missing_ok=True)
    _leave_at_once(sm)


def _leave_at_once(sm) -> None:
    """End a rule script's process now that its job has succeeded, without tearing the interpreter
    down: freeing every module and object (ONNX Runtime's sessions and thread pools, PyAV, Arrow)
    took about 0.1 s a job (0.13 s after a stand-in detection here), on every job of the chain.
    Everything the job made is already closed, sealed and in place (a seal is the digest of the
    file on disk); the logs and the console are flushed here, and the run lock (a flock) goes with
    the process's files.

    Only in the process Snakemake started for the script (its preamble makes `snakemake` a global
    of __main__): called from anywhere else (a test), this returns and the caller goes on."""
    if getattr(sys.modules.get("__main__"), "snakemake", None) is not sm:
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):  # closed or replaced by something without flush
            pass
    os._exit(0)


def _cause(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
