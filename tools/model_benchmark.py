#!/usr/bin/env python3
"""Model benchmark: CPU vs CUDA vs TensorRT, FP32 vs FP16, one face per call vs batches.

    python tools/model_benchmark.py                       # every provider this machine has
    python tools/model_benchmark.py --providers cpu --models w600k_r50 --batches 1

Real weights cannot be fetched on the machines this project is built on, so the models are
full-size stand-ins (tools/fullsize.py): the real models' inputs and outputs, a layout of the
same family, a comparable number of parameters and multiply-adds, random weights. The FP16
and batched variants, the sessions (TensorRT engine cache, FP16 flags) and IO binding are the
workflow's own code. Figures are measured on the current machine; nothing is asserted.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import warnings
from pathlib import Path

import onnxruntime

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the checkout's tools package
from tools.fullsize import BUILDERS  # noqa: E402
from tools.modelbench import BATCHED, describe, model_files, time_model  # noqa: E402

from facepipe.models.runtime import PROVIDER_NAMES, gpu_tag


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    available = [p for p, full in PROVIDER_NAMES.items() if full in onnxruntime.get_available_providers()]
    parser.add_argument("--models", nargs="+", default=list(BUILDERS), choices=list(BUILDERS))
    parser.add_argument("--providers", nargs="+", default=available, choices=list(PROVIDER_NAMES))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "fp16"], choices=["fp32", "fp16"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8],
                        help="items per call for the models the workflow batches (default 1 8)")
    parser.add_argument("--budget", type=float, default=5.0, help="seconds of timed calls per figure")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for ONNX Runtime (0: all)")
    parser.add_argument("--width", type=float, default=1.0, help="channel scale of the stand-ins (1: full size)")
    parser.add_argument("--workdir", type=Path, default=None, help="where models and TensorRT engines go")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Random weights below FP16's range: the converter warns about every one of them.
    warnings.filterwarnings("ignore", message="the float32 number", category=UserWarning)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="facepipe-models-"))
    gpu = gpu_tag(0) if set(args.providers) & {"cuda", "tensorrt"} else "none"
    print(f"onnxruntime {onnxruntime.__version__}; providers built in: {', '.join(available)}; GPU: {gpu}")
    print(f"models and engines under {workdir}; full-size stand-ins (random weights, width {args.width:g})")
    rows = []
    for key in args.models:
        files = model_files(key, workdir / "models", width=args.width)
        print(describe(key, files["fp32"]), flush=True)
        batches = args.batches if key in BATCHED else [1]
        for provider in args.providers:
            for precision in args.precisions:
                for batch in batches:
                    path = files.get(f"{precision}_batched", files[precision]) if batch > 1 else files[precision]
                    t = time_model(key, path, provider, precision, batch, budget_s=args.budget,
                                   threads=args.threads, trt_cache_dir=workdir / "trt_engines")
                    rows.append(t)
                    figures = ("n/a" if math.isnan(t.ms_per_call) else
                               f"{t.ms_per_call:9.2f} {t.ms_per_item:9.2f} {1000 / t.ms_per_item:9.1f} "
                               f"{t.first_s:9.2f} {t.calls:6d}")
                    print(f"  {provider:9s} {precision:5s} batch {batch:3d}  {figures}  {t.note}", flush=True)
    print()
    print("| model | provider | precision | batch | ms per call | ms per face | faces per s | first call s |")
    print("|---|---|---|---|---|---|---|---|")
    for t in rows:
        if not math.isnan(t.ms_per_call):
            print(f"| {t.model} | {t.provider} | {t.precision} | {t.batch} | {t.ms_per_call:.2f} | "
                  f"{t.ms_per_item:.2f} | {1000 / t.ms_per_item:.1f} | {t.first_s:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
