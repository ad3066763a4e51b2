"""Batched copies of fixed-batch models, made once and proven equal before they are used.

The published swappers and face restorers have a batch size fixed at 1, so each face costs
one model call. On a GPU a 128 px face is far too small to fill the device: the call's fixed
cost dominates, and a batch of faces per call is what pays. This module makes a copy of such
a model whose batch dimension is symbolic: graph inputs and outputs get a free first
dimension, and Reshape targets that hard-code a leading 1 take the batch from their input
instead (0 = "copy that dimension" in ONNX's Reshape).

A rewrite like that can be wrong for graphs it does not understand, so the copy is only
accepted after a check: a batch of distinct random inputs through the copy must give what
the original gives one input at a time. A model that fails the check is still written, as
the original graph with its fixed batch and a note saying why (``BATCH_NOTE_KEY``), so the
workflow's file exists and the swap simply runs one face per call.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from facepipe.models.download import sha256_file, write_verified_stamp

log = logging.getLogger(__name__)

BATCH_DIM = "batch"
BATCH_NOTE_KEY = "facepipe_batch"
CHECK_BATCH = 3
# FP16 graphs compute in half precision: a batched kernel may round differently.
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2}


def _fixed_batch(value_info: onnx.ValueInfoProto) -> bool:
    dims = value_info.type.tensor_type.shape.dim
    return len(dims) > 0 and dims[0].HasField("dim_value") and dims[0].dim_value == 1


def with_dynamic_batch(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with a symbolic batch dimension; also returns how many Reshape
    targets were changed. The copy is unchecked: see ``make_batched``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    initializers = {i.name for i in graph.initializer}
    for value_info in [*graph.input, *graph.output]:
        if value_info.name not in initializers and _fixed_batch(value_info):
            value_info.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM
    # Intermediate shapes recorded at export time would contradict the new batch dimension.
    del graph.value_info[:]

    constants = {i.name: i for i in graph.initializer}
    constant_nodes = {n.output[0]: n for n in graph.node if n.op_type == "Constant" and n.output}
    added = []
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        if any(a.name == "allowzero" and a.i == 1 for a in node.attribute):
            continue  # there 0 means a zero-sized dimension, not "copy"
        name = node.input[1]
        if name in constants:
            shape = numpy_helper.to_array(constants[name])
        elif name in constant_nodes:
            value = next((a.t for a in constant_nodes[name].attribute if a.name == "value"), None)
            if value is None:
                continue
            shape = numpy_helper.to_array(value)
        else:
            continue
        if shape.ndim != 1 or shape.size < 2 or shape[0] != 1:
            continue
        # Each Reshape gets its own target: a shared constant may feed something else too.
        new_name = f"{name}__{node.name or len(added)}_batched"
        new_shape = shape.copy()
        new_shape[0] = 0
        added.append(numpy_helper.from_array(new_shape.astype(shape.dtype), new_name))
        node.input[1] = new_name
    if added:
        # insightface's INSwapper reads its emap from the graph's *last* initializer: new ones
        # go before it, and targets no node reads any more are dropped.
        used = {name for node in graph.node for name in node.input}
        last = graph.initializer[-1] if len(graph.initializer) else None
        kept = [i for i in graph.initializer[:-1] if i.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept + added + ([last] if last is not None else []))
    return out, len(added)


def random_feed(session, rng: np.random.Generator, *, batch: int = 1,
                spatial: tuple[int, int] = (64, 64)) -> dict[str, np.ndarray]:
    """Uniform [0, 1) inputs for every input of a session: ``batch`` items where the first
    dimension is free, ``spatial`` (h, w) for free image sides, 1 for any other free dimension."""
    feed = {}
    for inp in session.get_inputs():
        shape = []
        for i, d in enumerate(inp.shape):
            if isinstance(d, int) and d > 0:
                shape.append(d)
            elif i == 0:
                shape.append(batch)
            else:
                shape.append(spatial[i - 2] if len(inp.shape) == 4 and i >= 2 else 1)
        dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        feed[inp.name] = rng.uniform(0.0, 1.0, size=shape).astype(dtype)
    return feed


def check_batched(original: onnx.ModelProto, batched: onnx.ModelProto, *, tolerance: float,
                  batch: int = CHECK_BATCH) -> str | None:
    """None when ``batched`` run on a batch equals ``original`` run item by item (on the CPU),
    else why not."""
    # lazy: ONNX Runtime is slow to import, and only this path needs it
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    try:
        single = onnxruntime.InferenceSession(original.SerializeToString(), options,
                                              providers=["CPUExecutionProvider"])
        many = onnxruntime.InferenceSession(batched.SerializeToString(), options,
                                            providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        items = [random_feed(single, rng) for _ in range(batch)]
        expected = [single.run(None, feed) for feed in items]
        stacked = {name: np.concatenate([feed[name] for feed in items]) for name in items[0]}
        got = many.run(None, stacked)
    except Exception as exc:  # ORT raises its own exception types for bad graphs and shapes
        return f"the batched graph does not run ({type(exc).__name__}: {exc})"
    for k, out in enumerate(got):
        want = np.concatenate([e[k] for e in expected])
        if out.shape != want.shape:
            return f"output {k} has shape {out.shape} for a batch of {batch}, expected {want.shape}"
        diff = float(np.max(np.abs(out.astype(np.float32) - want.astype(np.float32))))
        if diff > tolerance:
            return f"output {k} differs from one-at-a-time runs by up to {diff:.3g} (tolerance {tolerance:g})"
    return None


def make_batched(src: str | Path, dst: str | Path, *, precision: str = "fp32") -> bool:
    """Write the batched copy of ``src`` at ``dst`` (atomically), stamped as made here.

    True when the copy takes a free batch; False when the rewrite failed its check and the
    original graph (batch fixed) was written instead, with the reason in its metadata.
    """

    src, dst = Path(src), Path(dst)
    original = onnx.load(str(src))
    fixed = [i.name for i in original.graph.input if _fixed_batch(i)]
    if not fixed:
        result, why = original, None  # already free (or no batch dimension to free)
        note = "free batch in the original model"
    else:
        batched, changed = with_dynamic_batch(original)
        why = check_batched(original, batched, tolerance=TOLERANCE[precision])
        if why is None:
            result, note = batched, f"batch freed ({changed} Reshape targets now copy the batch)"
        else:
            result, note = original, f"batch kept fixed: {why}"
            log.warning("%s: no batched copy (%s); the workflow will run it one face per call", src, why)
    helper.set_model_props(result, {**{p.key: p.value for p in result.metadata_props}, BATCH_NOTE_KEY: note})
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    onnx.save(result, str(tmp))
    os.replace(tmp, dst)
    write_verified_stamp(dst, sha256_file(dst))
    log.info("%s made from %s: %s", dst, src, note)
    return why is None
