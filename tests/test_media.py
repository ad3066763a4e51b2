import json
from fractions import Fraction

import numpy as np
import pytest

from facepipe import media, video


def test_probe_counts_real_frames_and_audio(media_dir):
    info = media.probe(media_dir / "clip.mp4")
    assert (info.frames, info.width, info.height) == (50, 320, 180)
    assert Fraction(info.fps) == 25
    assert abs(info.duration - 2.0) < 1e-3
    assert info.has_audio and info.audio_codec == "aac"
    assert not media.probe(media_dir / "silent.mp4").has_audio


def test_probe_still_image(media_dir):
    info = media.probe(media_dir / "astronaut.png")
    assert info.is_image and info.frames == 1 and (info.width, info.height) == (512, 512)


@pytest.mark.parametrize("content, problem", [(b"", "empty"), (b"hello, not a video\n" * 50, "not a readable")])
def test_probe_rejects_bad_files_naming_them(tmp_path, content, problem):
    bad = tmp_path / "bad clip.mp4"
    bad.write_bytes(content)
    with pytest.raises(media.MediaError, match=problem) as err:
        media.probe(bad)
    assert "bad clip.mp4" in str(err.value)


def test_probe_missing_file(tmp_path):
    with pytest.raises(media.MediaError, match="does not exist"):
        media.probe(tmp_path / "nope.mp4")


def test_segments_are_frame_exact_and_sampled(media_dir, tmp_path):
    info = media.probe(media_dir / "clip.mp4").__dict__
    manifest = video.plan_segments(media_dir / "clip.mp4", info, tmp_path / "a", max_height=0, fps=0,
                                      segment_seconds=0.8)
    assert manifest["segments"] == {"seg_0000": 20, "seg_0001": 20, "seg_0002": 10}
    assert json.loads((tmp_path / "a" / "manifest.json").read_text()) == manifest
    low = video.plan_segments(media_dir / "clip.mp4", info, tmp_path / "b", max_height=90, fps=10,
                                 segment_seconds=1)
    assert (low["width"], low["height"]) == (160, 90)
    assert Fraction(low["fps"]) == 10 and low["frames"] == 20


def test_rotation_is_applied(media_dir, tmp_path):
    rotated = tmp_path / "rotated.mp4"
    media.run_ffmpeg(["-display_rotation", "90", "-i", str(media_dir / "clip.mp4"), "-c", "copy", str(rotated)],
                     what="tagging rotation")
    info = media.probe(rotated)
    assert info.rotation in (90, 270)
    manifest = video.plan_segments(rotated, info.__dict__, tmp_path / "r", max_height=0, fps=0,
                                   segment_seconds=10)
    assert (manifest["width"], manifest["height"]) == (180, 320)
    # The upright picture, as ffmpeg's own autorotation shows it.
    upright = tmp_path / "upright.png"
    media.run_ffmpeg(["-i", str(rotated), "-frames:v", "1", str(upright)], what="autorotating")
    (first,) = [f for f in video.iter_frames(rotated, tmp_path / "r", manifest, "seg_0000") if f.number == 1]
    expected = media.read_image(upright)
    assert first.bgr().shape == expected.shape
    assert np.abs(first.bgr().astype(int) - expected.astype(int)).mean() < 3


def test_concat_escapes_quotes(tmp_path):
    line = media._concat_line(tmp_path / "it's.mp4")
    assert line.endswith("it'\\''s.mp4'\n")
