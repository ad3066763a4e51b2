"""Degradation planning for GPU jobs (the retry path itself is exercised in test_robustness)."""

import pytest

from facepipe import gpu

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
    monkeypatch.setenv(gpu.INJECT_ENV, "swap_faces")
    with pytest.raises(gpu.GpuMemoryError, match="injected"):
        gpu.start("swap_faces", 1, ORDER, 0, record=record)
    d = gpu.start("swap_faces", 2, ORDER, 0, record=record)
    assert d.steps == ["fp16"] and record.exists()
    work = tmp_path / "work" / "job" / "degradations"
    work.mkdir(parents=True)
    gpu.start("detect_faces", 3, ORDER, 0, record=work / "detect_faces-seg_0000.json")
    assert gpu.summarize(tmp_path / "work") == [
        "job/detect_faces-seg_0000: fp16, resolution (attempt 3: retry after a failed attempt)"]
    gpu.start("detect_faces", 1, ORDER, 0, record=work / "detect_faces-seg_0000.json")
    assert gpu.summarize(tmp_path / "work") == []  # a clean rerun clears the record


def test_a_degraded_job_sends_one_face_per_call():
    assert gpu.plan(1, ORDER).batch_size(8) == 8
    assert gpu.plan(2, ORDER).batch_size(8) == 1
    assert gpu.plan(1, ORDER, free_mb=500, min_free_mb=1024).batch_size(8) == 1
    # degrade: [] asks for no degradation at all: a retry keeps its batches then.
    assert gpu.plan(2, []).batch_size(8) == 8
