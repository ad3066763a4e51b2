"""FP16 variants made once from verified FP32 models, kept as artifacts under resources/models.

Half-precision weights halve the model's memory and let CUDA and TensorRT use tensor cores.
Inputs and outputs stay FP32 (keep_io_types) so callers feed the same arrays. INSwapper reads
its `emap` matrix from the graph's last initializer in Python, so that initializer is kept last
(FP32 where the graph does not use it, as converted where it does).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import onnx
from onnx import numpy_helper

from facepipe.models.download import sha256_file, write_verified_stamp

log = logging.getLogger(__name__)


def convert_to_fp16(src: str | Path, dst: str | Path) -> Path:
    """Write an FP16 copy of `src` at `dst` (atomically) and stamp it as made here."""
    # lazy: onnxconverter-common is slow to import, and only this path needs it
    from onnxconverter_common import float16

    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    last = model.graph.initializer[-1]
    used = any(last.name in node.input for node in model.graph.node)
    emap = numpy_helper.to_array(last).copy()
    half = float16.convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
    # The converter annotates the Cast nodes it adds with the outputs' shapes. Where outputs of
    # different sizes share a symbolic dim ("?"), CUDA's memory planner took those annotations as
    # equal sizes and reused one buffer for another (a detector's three scales failed on an H200,
    # "Shape mismatch attempting to re-use buffer"). They are hints only: ONNX Runtime infers the
    # shapes itself.
    del half.graph.value_info[:]
    converted = next(i for i in half.graph.initializer if i.name == last.name)
    kept = [i for i in half.graph.initializer if i.name != last.name]
    del half.graph.initializer[:]
    half.graph.initializer.extend(kept)
    half.graph.initializer.append(converted if used else numpy_helper.from_array(emap, last.name))
    half.doc_string = (model.doc_string + "\n" if model.doc_string else "") + f"FP16 conversion of {src.name}"
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    onnx.save(half, str(tmp))
    os.replace(tmp, dst)
    digest = sha256_file(dst)
    write_verified_stamp(dst, digest)
    log.info("FP16 model %s made from %s (sha256 %s)", dst, src, digest)
    return dst
