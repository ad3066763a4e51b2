"""GPU memory: watching it, and degrading gracefully instead of dying.

The GPU rules have `retries:`, and Snakemake retries a failed job whatever the cause. Only running
out of memory is worth another attempt, so each failed attempt records its cause
(work/NAME/failures/RULE-SEGMENT.json, written by facepipe.workflow.rule_script.run): an attempt after an
out-of-memory failure applies one more step of the configured degradation order (FP16, a lower
working resolution, no enhancer), and an attempt after any other failure stops at once with the
same cause, doing no work. A job that starts with less free GPU memory than the configured
threshold starts one step down already. Every step taken is logged and recorded so the run's
summary can list it.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

DEGRADE_STEPS = ("fp16", "resolution", "no_enhancer")

# How the libraries under the GPU rules say they ran out of memory. ONNX Runtime raises its own
# RuntimeException types, not GpuMemoryError, so its messages are recognised:
# "Failed to allocate memory for requested buffer" (its BFC arena), "CUDA failure 2: out of memory",
# "CUDNN_STATUS_ALLOC_FAILED", "cudaErrorMemoryAllocation", TensorRT's "out of memory".
OOM_MESSAGES = ("out of memory", "failed to allocate memory", "cudnn_status_alloc_failed",
                "cudaerrormemoryallocation", "cuda_error_out_of_memory", "cublas_status_alloc_failed",
                "std::bad_alloc", "outofmemory")

# Causes a failed attempt can record (see facepipe.workflow.rule_script.run).
OOM, DISK_FULL, ERROR = "oom", "disk_full", "error"


class GpuMemoryError(RuntimeError):
    """Raised (or recognised) when a GPU runs out of memory."""


def exception_chain(exc: BaseException):
    """The exception and those it was raised from or while handling (each once)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_out_of_memory(exc: BaseException) -> bool:
    """True for running out of (GPU) memory: GpuMemoryError, MemoryError, or a library's own message.

    A full disk is not: "No space left on device" is a different failure that degradation cannot help.
    """
    for e in exception_chain(exc):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return False
        # MemoryError: host memory; the degraded attempt (one face per call, lower resolution) needs less.
        if isinstance(e, (GpuMemoryError, MemoryError)):
            return True
        text = str(e).lower()
        if any(m in text for m in OOM_MESSAGES):
            return True
    return False


def _write_atomic(path: Path, data: dict) -> None:
    # Under a temporary name, then renamed: a kill or a full disk never leaves a half record.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def record_failure(path: str | Path, rule: str, attempt: int, kind: str, message: str, detail: str = "") -> None:
    """Record why an attempt failed, for the next attempt of the same job to read. `detail` (a
    traceback) is kept because Snakemake removes a failed attempt's log before the retry."""
    data = {"rule": rule, "attempt": attempt, "kind": kind, "message": message}
    if detail:
        data["detail"] = detail
    _write_atomic(Path(path), data)


def read_failure(path: str | Path) -> dict | None:
    """The recorded failure of the previous attempt; None when there is none or it cannot be read."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable failure record %s: %s", path, exc)
        return None
    if not isinstance(data, dict) or data.get("kind") not in (OOM, DISK_FULL, ERROR) \
            or not isinstance(data.get("message"), str):
        log.warning("ignoring damaged failure record %s", path)
        return None
    return data


@dataclass
class Degradation:
    steps: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def fp16(self) -> bool:
        return "fp16" in self.steps

    @property
    def lower_resolution(self) -> bool:
        return "resolution" in self.steps

    @property
    def no_enhancer(self) -> bool:
        return "no_enhancer" in self.steps

    def batch_size(self, configured: int) -> int:
        """Faces per model call. A degraded job (retried after a failure, or short of memory at
        start) sends them one at a time as well: the first thing to give up, as it costs no
        quality (batched and single calls give the same faces)."""
        return 1 if self.steps else configured


# NVIDIA's CUDA driver library, which every CUDA or TensorRT program loads: where it does not load
# there is no NVIDIA driver, so no NVIDIA GPU can be used (macOS has none).
CUDA_DRIVER_LIBRARIES = {"win32": ("nvcuda.dll",), "darwin": ()}.get(sys.platform, ("libcuda.so.1", "libcuda.so"))


def cuda_driver_loads() -> bool:
    """Whether NVIDIA's CUDA driver library loads in this process."""
    # lazy: every job imports this module, and only the GPU test needs ctypes
    import ctypes

    for name in CUDA_DRIVER_LIBRARIES:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


@functools.lru_cache(maxsize=None)
def nvidia_gpu_missing(device: int = 0) -> str | None:
    """Why no NVIDIA GPU can run models in this process, in words, or None where one can: NVIDIA's
    CUDA driver library must load and NVML, where it answers, must have the device. The driver's
    library is asked first: on a machine without it that fails at once (2 ms here, where importing
    NVML and failing to start it took 23 ms), and NVML alone would refuse a Jetson, which has CUDA
    and no NVML."""
    if not cuda_driver_loads():
        if not CUDA_DRIVER_LIBRARIES:
            return "this system has no CUDA"
        return f"this machine has no NVIDIA driver ({CUDA_DRIVER_LIBRARIES[0]} does not load)"
    try:
        # lazy: NVML is slow to import, and only this path needs it
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no NVML to ask (a Jetson); NVML raises its own error family
        return None
    try:
        pynvml.nvmlDeviceGetHandleByIndex(device)
    except Exception:
        return f"NVML finds no GPU {device} on this machine"
    return None


def nvml_memory_mb(device: int = 0) -> tuple[int, int] | None:
    """(free, total) MiB of a GPU through NVML, or None where there is no NVML or no GPU."""
    try:
        # lazy: NVML is slow to import, and only this path needs it
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device)
        info = pynvml.nvmlDeviceGetMemoryInfo(handle)
        return int(info.free // 2**20), int(info.total // 2**20)
    except Exception:  # NVML raises its own error family for "no driver", "no device", ...
        return None


def plan(attempt: int, order: list[str], *, free_mb: int | None = None, min_free_mb: int = 0,
         after_oom: bool = True) -> Degradation:
    """Degradation steps for this attempt: one more step per retry after running out of memory, one
    more if memory is short at start. `after_oom` False (the previous attempt failed otherwise): no
    step for the retry, as a smaller model or picture cannot help."""
    unknown = [s for s in order if s not in DEGRADE_STEPS]
    if unknown:
        raise ValueError(f"unknown degradation step(s) {unknown}; known: {list(DEGRADE_STEPS)}")
    n = max(0, attempt - 1) if after_oom else 0
    reasons = [f"attempt {attempt}: retry after running out of memory"] if n else []
    if free_mb is not None and min_free_mb and free_mb < min_free_mb:
        n += 1
        reasons.append(f"only {free_mb} MiB GPU memory free at start (threshold {min_free_mb} MiB)")
    return Degradation(steps=list(order[:n]), reasons=reasons)


_UNKNOWN = object()


def start(rule: str, attempt: int, order: list[str], min_free_mb: int, *, record: str | Path | None = None,
          device: int = 0, previous=_UNKNOWN) -> Degradation:
    """Decide this job's degradation, log it, record it, and apply the test-only failure switches.

    `previous`: the previous attempt's failure record (read_failure), None when it left none. An
    attempt degrades only after running out of memory; one whose predecessor ended without a
    record (killed by a signal or crashed in native code, as a CUDA allocation abort does; or the
    kernel's OOM killer) is treated as out of memory too.
    """
    memory = nvml_memory_mb(device)
    if memory:
        log.info("GPU %d memory at start: %d MiB free of %d MiB", device, *memory)
    after_oom = True
    if attempt > 1 and previous is not _UNKNOWN:
        if previous is None:
            log.warning("%s attempt %d: attempt %d left no recorded cause (killed, or a crash in native "
                        "code); treated as out of memory", rule, attempt, attempt - 1)
        else:
            after_oom = previous.get("kind") == OOM
    degradation = plan(attempt, order, free_mb=memory[0] if memory else None, min_free_mb=min_free_mb,
                       after_oom=after_oom)
    if degradation.steps:
        log.warning("%s degraded (%s): %s, and one face per model call", rule, "; ".join(degradation.reasons),
                    ", ".join(degradation.steps))
    if record is not None:
        path = Path(record)
        path.parent.mkdir(parents=True, exist_ok=True)
        if degradation.steps:
            _write_atomic(path, {"rule": rule, "attempt": attempt, "steps": degradation.steps,
                                 "reasons": degradation.reasons})
        else:
            path.unlink(missing_ok=True)
    return degradation


class MemoryWatch:
    """Samples GPU memory use in the background and logs the peak at the end (NVML only)."""

    def __init__(self, device: int = 0, interval: float = 0.5):
        self.device, self.interval = device, interval
        self.peak_used_mb: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            memory = nvml_memory_mb(self.device)
            if memory:
                used = memory[1] - memory[0]
                self.peak_used_mb = max(self.peak_used_mb or 0, used)
            self._stop.wait(self.interval)

    def __enter__(self) -> "MemoryWatch":
        if nvml_memory_mb(self.device) is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        memory = nvml_memory_mb(self.device)
        log.info("GPU %d memory: peak used %s MiB, free at end %s MiB", self.device, self.peak_used_mb,
                 memory[0] if memory else "?")


def _read_degradation(path: Path) -> dict:
    data = json.loads(path.read_text())
    steps, reasons = data["steps"], data["reasons"]
    if not (isinstance(steps, list) and isinstance(reasons, list)
            and all(isinstance(x, str) for x in steps + reasons)):
        raise ValueError("steps and reasons must be lists of text")
    return data


def summarize(work_dir: str | Path = "work", *, logger=log) -> list[str]:
    """One line per degraded job of the run, from the records the GPU rules leave.

    Called from the run's onsuccess/onerror handlers, where an exception would turn a finished run
    into a failed one: a record that cannot be read (empty after a full disk, damaged) is skipped
    with a warning naming it.
    """
    lines = []
    for path in sorted(Path(work_dir).glob("*/degradations/*.json")):
        try:
            data = _read_degradation(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            try:
                empty = path.stat().st_size == 0
            except OSError:
                empty = False
            reason = "empty" if empty else f"{type(exc).__name__}: {exc}"
            logger.warning(f"ignoring unreadable degradation record {path} ({reason}); "
                           f"the job's log says whether it ran degraded")
            continue
        lines.append(f"{path.parent.parent.name}/{path.stem}: {', '.join(data['steps'])} "
                     f"({'; '.join(data['reasons'])})")
    return lines

