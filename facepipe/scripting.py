"""The glue every rule script uses: logging into the rule's log file and clear failures."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Callable



def _expected_errors() -> tuple[type[BaseException], ...]:
    from facepipe.download import ChecksumError, ModelUnavailableError
    from facepipe.faces import FaceError
    from facepipe.gpu import GpuMemoryError
    from facepipe.integrity import DamagedIntermediateError
    from facepipe.jobs import JobError
    from facepipe.media import MediaError
    from facepipe.classic_swap import SwapError
    from facepipe.offline import OfflineModelError

    return (MediaError, JobError, FaceError, ChecksumError, ModelUnavailableError, GpuMemoryError,
            SwapError, OfflineModelError, DamagedIntermediateError)


def setup_logging(logfile: str | Path | None) -> logging.Logger:
    """Everything to the rule's log file; warnings and errors to the console as well."""
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    if logfile:
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(logfile, mode="w", encoding="utf-8")
        fh.setFormatter(fmt)
        root.addHandler(fh)
    sh = logging.StreamHandler(sys.stderr)
    sh.setLevel(logging.WARNING if logfile else logging.INFO)
    sh.setFormatter(fmt)
    root.addHandler(sh)
    # ONNX Runtime and insightface print to stdout; keep that in the log, not the console.
    return logging.getLogger("facepipe.rule")


def gpu_start(sm):
    """Degradation for this attempt of a GPU rule (see facepipe.gpu), recorded for the run summary."""
    from facepipe import gpu

    segment = sm.wildcards.get("segment", "all")
    record = Path("work") / sm.wildcards.name / "degradations" / f"{sm.rule}-{segment}.json"
    return gpu.start(sm.rule, int(sm.resources.get("attempt", 1)), list(sm.params.degrade),
                     int(sm.params.min_free_gpu_mb), record=record)


def keep_freed_memory(limit_mb: int = 64) -> bool:
    """Let glibc's malloc reuse freed buffers instead of returning them to the system.

    Every frame passes through a few buffers of about 3 MB (a decoded frame, the detector's
    input blob). By default glibc maps each such buffer fresh and unmaps it when freed, so
    every frame pays for thousands of page faults: measured here, a quarter of detection's
    CPU time. Buffers under limit_mb now come from the heap, and up to 4 * limit_mb of freed
    memory is kept for reuse. Returns False where this is not glibc (nothing changes).
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, limit_mb << 20)
                    and libc.mallopt(M_TRIM_THRESHOLD, 4 * limit_mb << 20))
    except (OSError, AttributeError):
        return False


def run(snakemake, main: Callable) -> None:
    """Run a rule's main(snakemake, log); expected errors exit 1 with one clear message."""
    logfile = snakemake.log[0] if len(snakemake.log) else None
    log = setup_logging(logfile)
    log.info("rule %s, wildcards %s, threads %s", snakemake.rule, dict(snakemake.wildcards.items()),
             snakemake.threads)
    # Which GPU the scheduler gave this job (unset for CPU jobs); cluster tests read this line.
    log.info("CUDA_VISIBLE_DEVICES=%s", os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
    # OpenCV's own thread pool follows the job's threads too: jobs share the cores the
    # scheduler counted, and oversubscribed pools spend their time waiting on each other.
    import cv2

    cv2.setNumThreads(max(1, int(snakemake.threads)))
    keep_freed_memory()
    stream = open(logfile, "a", encoding="utf-8") if logfile else contextlib.nullcontext(sys.stdout)
    try:
        from facepipe.gpu import MemoryWatch

        watch = MemoryWatch() if snakemake.resources.get("gpu") else contextlib.nullcontext()
        with stream as out, contextlib.redirect_stdout(out), watch:
            main(snakemake, log)
    except _expected_errors() as exc:
        log.error("%s", exc)
        print(f"ERROR in rule {snakemake.rule}: {exc}", file=sys.stderr)
        sys.exit(1)
