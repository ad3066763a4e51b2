"""Sessions must run, and must say loudly when they are not on the requested device."""

import logging
import sys

import numpy as np
import pytest

from facepipe.models.runtime import PROVIDER_NAMES, create_session, installed_onnxruntime_distributions, is_standin
from facepipe.models.standin import build_standin


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory):
    # Under a `standin/` folder, as the workflow keeps them: real model names elsewhere are hash-checked.
    folder = tmp_path_factory.mktemp("rt") / "standin"
    folder.mkdir()
    return build_standin("w600k_r50", folder / "w600k_r50.onnx")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the GPU build is the Linux choice")
def test_exactly_one_onnxruntime_ships_the_package():
    assert installed_onnxruntime_distributions() == ["onnxruntime-gpu"]


def test_is_standin(recognizer, tmp_path):
    import onnx

    assert is_standin(recognizer)
    model = onnx.load(str(recognizer))
    del model.metadata_props[:]
    plain = tmp_path / "plain.onnx"
    onnx.save(model, str(plain))
    assert not is_standin(plain)


def test_gpu_request_reports_the_provider_actually_used(recognizer, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="facepipe.models.runtime"):
        session = create_session(
            recognizer, ["tensorrt", "cuda", "cpu"], threads=1, trt_cache_dir=tmp_path / "trt"
        )
    out = session.run(None, {"input.1": np.zeros((2, 3, 112, 112), np.float32)})[0]
    assert out.shape == (2, 512)
    actual = session.get_providers()[0]
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert any(lvl == logging.INFO and f"runs on {actual}" in m for lvl, m in messages)
    assert any(lvl == logging.WARNING and "STAND-IN model" in m for lvl, m in messages)
    fell_back = [m for lvl, m in messages if lvl == logging.WARNING and "not on the requested" in m]
    if actual == PROVIDER_NAMES["tensorrt"]:
        assert not fell_back  # a machine where TensorRT really loads
        assert (tmp_path / "trt" / "w600k_r50").is_dir()
    else:
        # This CPU-only machine: the fallback must be a WARNING naming TensorRT.
        assert fell_back and "TensorrtExecutionProvider" in fell_back[0]


def test_without_a_gpu_the_gpu_providers_are_not_asked_for(recognizer, tmp_path, caplog, capfd, monkeypatch):
    """Where no NVIDIA GPU can be used (facepipe.gpu.nvidia_gpu_missing), ONNX Runtime is not asked for
    CUDA or TensorRT, so it prints none of its red load errors; the one warning says why the model
    runs on the CPU. Where one can, they are asked for (and on a machine without the CUDA libraries
    fail as ONNX Runtime says)."""
    import facepipe.models.runtime as runtime

    def request():
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="facepipe.models.runtime"):
            create_session(recognizer, ["tensorrt", "cuda", "cpu"], trt_cache_dir=tmp_path / "trt")
        native = capfd.readouterr().err
        fell_back = [r.getMessage() for r in caplog.records if "not on the requested" in r.getMessage()]
        return native, fell_back

    monkeypatch.setattr(runtime, "nvidia_gpu_missing", lambda device=0: "no NVIDIA driver here")
    native, fell_back = request()
    assert "Failed to load library" not in native and "EP Error" not in native
    assert len(fell_back) == 1 and fell_back[0].endswith("TensorrtExecutionProvider: no NVIDIA driver here")
    monkeypatch.setattr(runtime, "nvidia_gpu_missing", lambda device=0: None)
    native, fell_back = request()
    if fell_back:  # a machine without the CUDA libraries, as this one: ONNX Runtime tried and said why
        assert len(fell_back) == 1 and "could not be loaded" in fell_back[0]


def test_cpu_only_request_is_quiet_apart_from_the_standin_label(recognizer, caplog):
    with caplog.at_level(logging.INFO, logger="facepipe.models.runtime"):
        session = create_session(recognizer, ["cpu"], threads=2)
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.get_session_options().intra_op_num_threads == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("STAND-IN model")


def test_unknown_provider_is_dropped_with_a_warning(recognizer, caplog):
    with caplog.at_level(logging.WARNING, logger="facepipe.models.runtime"):
        session = create_session(recognizer, ["NoSuchExecutionProvider", "cpu"])
    assert session.get_providers()[0] == "CPUExecutionProvider"
    assert "NoSuchExecutionProvider is not available" in caplog.text


def test_bad_precision_is_rejected(recognizer):
    with pytest.raises(ValueError):
        create_session(recognizer, ["cpu"], precision="int8")


def test_cpu_only_reads_provider_names_as_the_options_give_them():
    from facepipe.models.runtime import cpu_only

    assert cpu_only(["cpu"]) and cpu_only(["CPU"]) and cpu_only(["CPUExecutionProvider"])
    assert not cpu_only(["cuda", "cpu"]) and not cpu_only(["TensorrtExecutionProvider", "cpu"])


def test_the_first_gpu_is_not_named_in_the_provider_options(tmp_path):
    """Naming device_id made ONNX Runtime 1.31 warn in every GPU session (no plugin EP device found,
    seen on an H200); device 0 is the providers' default, another device is still named."""
    from facepipe.models.runtime import _provider_options

    for name in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        first = _provider_options(name, tmp_path / "m.onnx", precision="fp32", trt_cache_dir=tmp_path, device_id=0)
        second = _provider_options(name, tmp_path / "m.onnx", precision="fp32", trt_cache_dir=tmp_path, device_id=1)
        assert "device_id" not in first and second["device_id"] == "1"
        assert set(second) - set(first) == {"device_id"}
