"""Outputs appear only when complete, so a killed job never leaves a plausible half output."""

import pytest

from facepipe.media.files import atomic_output_dir


def test_directory_appears_only_when_complete(tmp_path):
    out = tmp_path / "frames"
    with atomic_output_dir(out) as partial:
        (partial / "000001.png").write_bytes(b"x")
        assert not out.exists()
    assert (out / "000001.png").exists() and not partial.exists()


def test_failure_leaves_no_output_and_a_rerun_starts_clean(tmp_path):
    out = tmp_path / "frames"
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out) as partial:
            (partial / "000001.png").write_bytes(b"half")
            raise RuntimeError("killed")
    assert not out.exists()
    with atomic_output_dir(out) as partial:
        assert list(partial.iterdir()) == []  # the stale partial was cleared
        (partial / "000002.png").write_bytes(b"y")
    assert [p.name for p in out.iterdir()] == ["000002.png"]
