"""The QC report's readers of benchmark files and logs (facepipe.qc)."""

from facepipe.qc import providers, stage_timings


def test_stage_timings_sum_segments_and_keep_the_largest_memory(tmp_path):
    bench = tmp_path / "benchmarks" / "job"
    header = "s\th:m:s\tmax_rss\tmax_vms\n"
    for seg, (s, rss) in {"seg_0000": (2.5, 300), "seg_0001": (1.5, 500)}.items():
        (bench / "detect_faces").mkdir(parents=True, exist_ok=True)
        (bench / "detect_faces" / f"{seg}.tsv").write_text(header + f"{s}\t0:00:02\t{rss}\t900\n")
    (bench / "track_faces.tsv").write_text(header + "0.5\t0:00:00\t120\t400\n")
    table = stage_timings(bench).set_index("rule")
    assert table.loc["detect_faces", "seconds"] == 4.0 and table.loc["detect_faces", "max_rss_mb"] == 500
    assert table.loc["detect_faces", "jobs"] == 2 and table.loc["track_faces", "seconds"] == 0.5


def test_providers_are_read_from_the_rules_logs(tmp_path):
    logs = tmp_path / "logs" / "job"
    (logs / "swap_faces").mkdir(parents=True)
    line = "2026-11-30 INFO facepipe.runtime: resources/models/inswapper_128.onnx runs on {} (requested x)\n"
    (logs / "swap_faces" / "seg_0000.log").write_text(line.format("CUDAExecutionProvider"))
    fallback = "resources/models/inswapper_128.onnx runs on CPUExecutionProvider, not on the requested X\n"
    (logs / "swap_faces" / "seg_0001.log").write_text(line.format("CPUExecutionProvider") + fallback)
    table = providers(logs)
    assert sorted(zip(table["model"], table["provider"], table["jobs"])) == [
        ("inswapper_128.onnx", "CPUExecutionProvider", 1), ("inswapper_128.onnx", "CUDAExecutionProvider", 1)]
