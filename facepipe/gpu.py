"""GPU memory: watching it, and degrading gracefully instead of dying.

A GPU rule that fails (typically out of memory) is retried by Snakemake (`retries:`); each new
attempt applies one more step of the configured degradation order (FP16, a lower working
resolution, no enhancer). A job that starts with less free GPU memory than the configured
threshold starts one step down already. Every step taken is logged and recorded so the run's
summary can list it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

DEGRADE_STEPS = ("fp16", "resolution", "no_enhancer")
# Test-only switch: "rule[,rule...]" makes those rules fail on their first attempt as if the
# GPU ran out of memory, so the retry-and-degrade path can be proven on a CPU machine.
INJECT_ENV = "FACEPIPE_TEST_INJECT_GPU_OOM"


class GpuMemoryError(RuntimeError):
    """Raised (or recognised) when a GPU runs out of memory."""


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


def nvml_memory_mb(device: int = 0) -> tuple[int, int] | None:
    """(free, total) MiB of a GPU through NVML, or None where there is no NVML or no GPU."""
    try:
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


def plan(attempt: int, order: list[str], *, free_mb: int | None = None, min_free_mb: int = 0) -> Degradation:
    """Degradation steps for this attempt: one more step per retry, one more if memory is short."""
    unknown = [s for s in order if s not in DEGRADE_STEPS]
    if unknown:
        raise ValueError(f"unknown degradation step(s) {unknown}; known: {list(DEGRADE_STEPS)}")
    n = max(0, attempt - 1)
    reasons = [f"attempt {attempt}: retry after a failed attempt"] if n else []
    if free_mb is not None and min_free_mb and free_mb < min_free_mb:
        n += 1
        reasons.append(f"only {free_mb} MiB GPU memory free at start (threshold {min_free_mb} MiB)")
    return Degradation(steps=list(order[:n]), reasons=reasons)


def start(rule: str, attempt: int, order: list[str], min_free_mb: int, *, record: str | Path | None = None,
          device: int = 0) -> Degradation:
    """Decide this job's degradation, log it, record it, and apply the test-only failure switch."""
    memory = nvml_memory_mb(device)
    if memory:
        log.info("GPU %d memory at start: %d MiB free of %d MiB", device, *memory)
    degradation = plan(attempt, order, free_mb=memory[0] if memory else None, min_free_mb=min_free_mb)
    if degradation.steps:
        log.warning("%s degraded (%s): %s, and one face per model call", rule, "; ".join(degradation.reasons),
                    ", ".join(degradation.steps))
    if record is not None:
        path = Path(record)
        path.parent.mkdir(parents=True, exist_ok=True)
        if degradation.steps:
            path.write_text(json.dumps({"rule": rule, "attempt": attempt, "steps": degradation.steps,
                                        "reasons": degradation.reasons}) + "\n")
        else:
            path.unlink(missing_ok=True)
    injected = {r.strip() for r in os.environ.get(INJECT_ENV, "").split(",") if r.strip()}
    if rule in injected and attempt == 1:
        raise GpuMemoryError(f"injected GPU out-of-memory in {rule} (test switch {INJECT_ENV})")
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


def summarize(work_dir: str | Path = "work") -> list[str]:
    """One line per degraded job of the run, from the records the GPU rules leave."""
    lines = []
    for path in sorted(Path(work_dir).glob("*/degradations/*.json")):
        data = json.loads(path.read_text())
        lines.append(f"{path.parent.parent.name}/{path.stem}: {', '.join(data['steps'])} "
                     f"({'; '.join(data['reasons'])})")
    return lines

