"""Model timings per provider, precision and batch size, on full-size stand-ins (tools/fullsize.py).

The variants are made by the workflow's own code: FP16 by facepipe.models.fp16, batched copies by
facepipe.models.batching, sessions by facepipe.models.runtime.create_session (TensorRT engine cache, FP16
flags, CPU threads), and GPU sessions run through IO binding as the rules run them.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from facepipe.models.batching import make_batched, random_feed
from facepipe.models.fp16 import convert_to_fp16
from facepipe.models import batched_path
from facepipe.models.runtime import PROVIDER_NAMES, BoundRunner, create_session, runs_on_gpu
from tools.fullsize import make_fullsize, size_of

log = logging.getLogger(__name__)

# The models the pipeline calls with more than one face at a time. The recognizer's batch is
# free in the published file already; the others get a batched copy (facepipe.models.batching).
# The detector sees one frame per call.
BATCHED = {"inswapper_128", "hyperswap_1a_256", "gfpgan_1.4", "w600k_r50"}
NEEDS_BATCHED_COPY = {"inswapper_128", "hyperswap_1a_256", "gfpgan_1.4"}
# The detector's input for a 16:9 frame (facepipe.models.face_analyzer.detector_size), the others' own.
DETECTOR_INPUT = (384, 640)


@dataclass
class Timing:
    model: str
    provider: str
    precision: str
    batch: int
    first_s: float  # the first call: TensorRT builds (or loads) its engine here
    ms_per_call: float
    calls: int
    note: str = ""

    @property
    def ms_per_item(self) -> float:
        return self.ms_per_call / self.batch


def model_files(key: str, folder: str | Path, *, width: float = 1.0) -> dict[str, Path]:
    """precision -> file of the full-size stand-in (made once in ``folder``), plus
    "<precision>_batched" for the models the pipeline batches."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Not the real file names: verify_before_use must not take them for real models.
    fp32 = folder / f"{key}.fullsize.onnx"
    if not fp32.exists():
        model = make_fullsize(key, width)
        tmp = fp32.with_name(fp32.name + ".tmp")
        onnx.save(model, str(tmp))
        tmp.replace(fp32)
    files = {"fp32": fp32}
    fp16 = folder / f"{key}.fullsize_fp16.onnx"
    if not fp16.exists():
        convert_to_fp16(fp32, fp16)
    files["fp16"] = fp16
    if key in NEEDS_BATCHED_COPY:
        for precision in ("fp32", "fp16"):
            dst = batched_path(files[precision])
            if not dst.exists():
                make_batched(files[precision], dst, precision=precision)
            files[f"{precision}_batched"] = dst
    return files


def time_model(key: str, path: Path, provider: str, precision: str, batch: int, *, budget_s: float = 5.0,
               min_calls: int = 3, threads: int = 0, trt_cache_dir: str | Path = "resources/trt_engines") -> Timing:
    """Median time of one call with ``batch`` items, calls repeated for about ``budget_s``."""
    full = PROVIDER_NAMES[provider]
    session = create_session(path, [provider], precision=precision, threads=threads, trt_cache_dir=trt_cache_dir)
    if session.get_providers()[0] != full:
        return Timing(key, provider, precision, batch, 0.0, float("nan"), 0,
                      f"{full} not usable here (the session fell back to {session.get_providers()[0]})")
    fixed = session.get_inputs()[0].shape[0]
    if isinstance(fixed, int) and fixed != batch:
        return Timing(key, provider, precision, batch, 0.0, float("nan"), 0, f"batch fixed at {fixed}")
    feed = random_feed(session, np.random.default_rng(0), batch=batch, spatial=DETECTOR_INPUT)
    if runs_on_gpu(session):
        runner = BoundRunner(session)
        call = lambda: runner.run(feed)  # noqa: E731
    else:
        call = lambda: session.run(None, feed)  # noqa: E731
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    call()  # warm-up: allocators and cuDNN's algorithm choice
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < min_calls or time.perf_counter() < deadline:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return Timing(key, provider, precision, batch, first, 1000 * statistics.median(times), len(times))


def describe(key: str, path: Path) -> str:
    params, macs = size_of(onnx.load(str(path), load_external_data=False))
    return f"{key}: {params / 1e6:.1f} M parameters, {macs / 1e9:.1f} G multiply-adds per item"
