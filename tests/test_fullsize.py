"""Full-size stand-ins (tools/fullsize.py) and the model benchmark's timing (tools/modelbench.py)."""

import math

import numpy as np
import onnxruntime
import pytest

from tools.fullsize import REAL_PARAMS, make_fullsize, size_of
from tools.modelbench import model_files, time_model
from facepipe.models.standin import SIGNATURES


def _session(model):
    return onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("key", sorted(REAL_PARAMS))
def test_fullsize_standins_have_the_real_inputs_and_outputs(key):
    model = make_fullsize(key, width=0.1)
    session = _session(model)
    sig = SIGNATURES[key]
    assert [(i.name, i.shape) for i in session.get_inputs()] == [(s.name, list(s.shape)) for s in sig.inputs]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [(s.name, list(s.shape)) for s in sig.outputs]
    props = {p.key: p.value for p in model.metadata_props}
    assert props["facepipe_standin"] == "fullsize" and props["real_model"] == key


def test_detector_outputs_have_scrfd_shapes_for_a_fitted_input():
    session = _session(make_fullsize("det_10g", width=0.1))
    outs = session.run(None, {"input.1": np.zeros((1, 3, 384, 640), np.float32)})
    rows = [2 * (384 // s) * (640 // s) for s in (8, 16, 32)]
    assert [o.shape for o in outs] == [(n, w) for w in (1, 4, 10) for n in rows]


@pytest.mark.parametrize("key, width", [("det_10g", 1), ("w600k_r50", 1), ("inswapper_128", 0.5),
                                        ("hyperswap_1a_256", 0.25), ("gfpgan_1.4", 0.25)])
def test_fullsize_standins_are_sized_like_the_real_models(key, width):
    # The convolutions' parameters grow with the square of the width: a quarter-width build
    # says what the full one holds, without building the 500 MB ones here.
    params, macs = size_of(make_fullsize(key, width=width))
    assert 0.8 < params / width**2 / REAL_PARAMS[key] < 1.25
    assert macs > 0


def test_fullsize_swapper_gets_a_free_batch_and_is_timed(tmp_path):
    files = model_files("inswapper_128", tmp_path, width=0.05)
    assert {"fp32", "fp16", "fp32_batched", "fp16_batched"} <= set(files)
    batched = onnxruntime.InferenceSession(str(files["fp32_batched"]), providers=["CPUExecutionProvider"])
    assert batched.get_inputs()[0].shape[0] == "batch"
    single = time_model("inswapper_128", files["fp32"], "cpu", "fp32", 1, budget_s=0.1)
    many = time_model("inswapper_128", files["fp32_batched"], "cpu", "fp32", 4, budget_s=0.1)
    assert single.calls >= 3 and math.isfinite(single.ms_per_call) and single.ms_per_call > 0
    assert many.ms_per_item == pytest.approx(many.ms_per_call / 4)
    fixed = time_model("inswapper_128", files["fp32"], "cpu", "fp32", 4, budget_s=0.1)
    assert math.isnan(fixed.ms_per_call) and "batch fixed at 1" in fixed.note
