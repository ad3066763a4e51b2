"""Degradation planning for GPU jobs (the retry path itself is exercised in test_robustness and test_failures)."""

import errno
import logging

import pytest

from facepipe import gpu
from tests.fault_switches import sitecustomize as faults

ORDER = ["fp16", "resolution", "no_enhancer"]


def test_each_attempt_takes_one_more_step_in_the_configured_order():
    assert gpu.plan(1, ORDER).steps == []
    assert gpu.plan(2, ORDER).steps == ["fp16"]
    assert gpu.plan(3, ORDER).steps == ["fp16", "resolution"]
    assert gpu.plan(9, ORDER).steps == ORDER
    assert gpu.plan(2, ["no_enhancer", "fp16"]).steps == ["no_enhancer"]
    assert gpu.plan(5, []).steps == []


def test_short_free_memory_starts_degraded():
    d = gpu.plan(1, ORDER, free_mb=500, min_free_mb=1024)
    assert d.steps == ["fp16"] and d.fp16 and "500 MiB" in d.reasons[0]
    assert gpu.plan(1, ORDER, free_mb=4096, min_free_mb=1024).steps == []
    assert gpu.plan(1, ORDER, free_mb=None, min_free_mb=1024).steps == []  # no NVML: no guess


def test_unknown_step_is_an_error():
    with pytest.raises(ValueError, match="bogus"):
        gpu.plan(2, ["bogus"])


def test_start_records_and_injects(tmp_path, monkeypatch):
    record = tmp_path / "deg.json"
    monkeypatch.setattr(gpu, "start", gpu.start)  # put back after the test switches wrap it
    faults.wrap(gpu)
    monkeypatch.setenv(faults.INJECT_ENV, "swap_faces")
    with pytest.raises(gpu.GpuMemoryError, match="injected"):
        gpu.start("swap_faces", 1, ORDER, 0, record=record)
    d = gpu.start("swap_faces", 2, ORDER, 0, record=record)
    assert d.steps == ["fp16"] and record.exists()
    work = tmp_path / "work" / "job" / "degradations"
    work.mkdir(parents=True)
    gpu.start("detect_faces", 3, ORDER, 0, record=work / "detect_faces-seg_0000.json")
    assert gpu.summarize(tmp_path / "work") == [
        "job/detect_faces-seg_0000: fp16, resolution (attempt 3: retry after running out of memory)"]
    gpu.start("detect_faces", 1, ORDER, 0, record=work / "detect_faces-seg_0000.json")
    assert gpu.summarize(tmp_path / "work") == []  # a clean rerun clears the record


def test_a_degraded_job_sends_one_face_per_call():
    assert gpu.plan(1, ORDER).batch_size(8) == 8
    assert gpu.plan(2, ORDER).batch_size(8) == 1
    assert gpu.plan(1, ORDER, free_mb=500, min_free_mb=1024).batch_size(8) == 1
    # degrade: [] asks for no degradation at all: a retry keeps its batches then.
    assert gpu.plan(2, []).batch_size(8) == 8


def test_only_an_attempt_after_running_out_of_memory_degrades():
    assert gpu.plan(3, ORDER, after_oom=False).steps == []
    assert gpu.plan(2, ORDER, after_oom=False).batch_size(8) == 8
    # Short memory at start still takes its step whatever the previous attempt did.
    assert gpu.plan(2, ORDER, free_mb=500, min_free_mb=1024, after_oom=False).steps == ["fp16"]
    oom = {"kind": gpu.OOM, "message": "out of memory"}
    other = {"kind": gpu.ERROR, "message": "ValueError: bad"}
    assert gpu.start("swap_faces", 2, ORDER, 0, previous=oom).steps == ["fp16"]
    assert gpu.start("swap_faces", 2, ORDER, 0, previous=other).steps == []
    # No record at all: the attempt died without an exception (killed, a native crash): as OOM.
    assert gpu.start("swap_faces", 2, ORDER, 0, previous=None).steps == ["fp16"]


@pytest.mark.parametrize("exc", [
    gpu.GpuMemoryError("x"),
    MemoryError(),
    RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running Conv "
                 "node. Name:'Conv_0' Status Message: /onnxruntime_src/onnxruntime/core/framework/bfc_arena.cc:376 "
                 "void* onnxruntime::BFCArena::AllocateRawInternal(size_t, bool, onnxruntime::Stream*, bool, "
                 "onnxruntime::WaitNotificationFn) Failed to allocate memory for requested buffer of size 1073741824"),
    RuntimeError("CUDA failure 2: out of memory ; GPU=0 ; hostname=x ; expr=cudaMalloc((void**)&p, size);"),
    RuntimeError("CUDNN failure 4: CUDNN_STATUS_ALLOC_FAILED ; GPU=0"),
    RuntimeError("cudaErrorMemoryAllocation"),
])
def test_out_of_memory_is_recognised(exc):
    assert gpu.is_out_of_memory(exc)
    wrapped = ValueError("while swapping")
    wrapped.__cause__ = exc
    assert gpu.is_out_of_memory(wrapped)


@pytest.mark.parametrize("exc", [
    ValueError("bad shape"),
    OSError(errno.ENOSPC, "No space left on device"),
    RuntimeError("ffmpeg failed: No space left on device"),
    FileNotFoundError(errno.ENOENT, "gone", "x.onnx"),
])
def test_other_failures_are_not_out_of_memory(exc):
    assert not gpu.is_out_of_memory(exc)


def test_injected_failure_switch(monkeypatch):
    monkeypatch.setattr(gpu, "start", gpu.start)
    faults.wrap(gpu)
    monkeypatch.setenv(faults.INJECT_FAILURE_ENV, "swap_faces,detect_faces:enospc")
    with pytest.raises(ValueError, match="injected failure"):
        gpu.start("swap_faces", 1, ORDER, 0)
    with pytest.raises(OSError) as info:
        gpu.start("detect_faces", 1, ORDER, 0)
    assert info.value.errno == errno.ENOSPC
    gpu.start("swap_faces", 2, ORDER, 0, previous={"kind": gpu.OOM, "message": "m"})  # first attempt only
    gpu.start("enhance_faces", 1, ORDER, 0)


def test_failure_records_round_trip_and_damaged_ones_are_ignored(tmp_path, caplog):
    path = tmp_path / "failures" / "swap_faces-seg_0000.json"
    gpu.record_failure(path, "swap_faces", 1, gpu.ERROR, "ValueError: bad")
    assert gpu.read_failure(path)["message"] == "ValueError: bad"
    assert not list(path.parent.glob("*.tmp"))
    assert gpu.read_failure(tmp_path / "none.json") is None
    for text in ("", "{", "[]", '{"kind": "weird", "message": "m"}'):
        path.write_text(text)
        with caplog.at_level(logging.WARNING):
            assert gpu.read_failure(path) is None
    assert "failure record" in caplog.text


@pytest.mark.parametrize("text", ["", "{not json", "[]", '{"steps": "fp16", "reasons": []}', '{"rule": "x"}'])
def test_summarize_skips_an_unreadable_degradation_record_with_a_warning(tmp_path, caplog, text):
    records = tmp_path / "work" / "job" / "degradations"
    records.mkdir(parents=True)
    gpu.start("swap_faces", 2, ORDER, 0, record=records / "swap_faces-seg_0000.json")
    (records / "detect_faces-seg_0001.json").write_text(text)
    with caplog.at_level(logging.WARNING):
        lines = gpu.summarize(tmp_path / "work")
    assert lines == ["job/swap_faces-seg_0000: fp16 (attempt 2: retry after running out of memory)"]
    assert "detect_faces-seg_0001.json" in caplog.text and "ignoring" in caplog.text
    if not text:
        assert "empty" in caplog.text


def test_a_gpu_is_missing_without_the_driver_and_where_nvml_has_no_device(monkeypatch):
    """nvidia_gpu_missing: the driver's library first (this machine has none), then NVML where it
    answers; a machine with the driver and no NVML to ask (a Jetson) has its GPU."""
    import sys
    import types

    def missing(driver: bool, nvml):
        gpu.nvidia_gpu_missing.cache_clear()
        monkeypatch.setattr(gpu, "cuda_driver_loads", lambda: driver)
        monkeypatch.setitem(sys.modules, "pynvml", nvml)
        return gpu.nvidia_gpu_missing(0)

    def fails(*_):
        raise RuntimeError("NVML error")

    def nvml(init, handle):
        return types.SimpleNamespace(nvmlInit=init, nvmlDeviceGetHandleByIndex=handle)

    try:
        assert missing(False, nvml(lambda: None, lambda i: object())) is not None
        assert missing(True, nvml(fails, fails)) is None  # a Jetson: the driver, no NVML
        assert missing(True, nvml(lambda: None, lambda i: object())) is None
        assert missing(True, nvml(lambda: None, fails)) == "NVML finds no GPU 0 on this machine"
    finally:
        gpu.nvidia_gpu_missing.cache_clear()
