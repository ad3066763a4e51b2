"""Sound in sync, and a mux that never writes a wrong result.

The targets are made here, each with the timing real clips have: a video stream that starts
after its audio (clips cut from streams), an MP4 whose edit list starts it after its first
frames (a stream-copy cut on a frame that is not a keyframe), audio that starts after the video,
audio longer than the video. Every result must keep the target's offset between its first frame
and its first audio sample, and every frame its place against the sound, with one segment or
several, at the target's rate or a sampled one.
"""

import os
import re
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from tests.workflow_helpers import copy_workflow
from tests.workflow_helpers import pin_backend, snakemake, write_sheet

from facepipe.media import demo, ffmpeg as media_ffmpeg, files

pytestmark = pytest.mark.workflow

FPS = 25
FRAME = 1 / FPS  # the tolerance: one frame of the targets
SAMPLED = 10  # the `fps` sampling the sampled jobs ask for


def ffmpeg(*args):
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
                    *map(str, args)], check=True)


def tone(seconds, frequency=440, rate=48000):
    return ["-f", "lavfi", "-i", f"sine=frequency={frequency}:sample_rate={rate}:duration={seconds}"]


def first_time(path, kind):
    """When the first frame is shown / the first sample is heard: the first decoded frame's time
    (the decoder drops what an edit list or the encoder's priming says to skip)."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0] if kind == "video" else c.streams.audio[0]
        for frame in c.decode(stream):
            return float(frame.pts * frame.time_base)


def av_offset(path):
    """The first video frame's time minus the first audio sample's."""
    return first_time(path, "video") - first_time(path, "audio")


def presented_times(path):
    """Sorted times of the video frames a player shows (packets an edit list discards left out)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return sorted(float(p.pts * p.time_base) for p in c.demux(s) if p.size and not p.is_discard)


def audio_span(path):
    """Seconds from the first audio sample heard to the end of the last packet."""
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        end = max(float((p.pts + p.duration) * p.time_base) for p in c.demux(s) if p.size)
    return end - first_time(path, "audio")


def decoded(path, size=None):
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="gray") for f in c.decode(video=0)]
    if size:
        import cv2

        frames = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
    return [f.astype(np.float32) for f in frames]


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    """The targets (320x180, 25 fps, 1.5-3 s, a 440 Hz tone) and the source face."""
    d = tmp_path_factory.mktemp("sync inputs")
    face = demo.insightface_image("t1.jpg")
    base = demo.make_clip(face, d / "base.mp4", seconds=2, fps=FPS, size=(320, 180), audio=False)
    short = demo.make_clip(face, d / "short.mp4", seconds=1.5, fps=FPS, size=(320, 180), audio=False)
    # Two keyframes (0 and 2 s): the cut below starts inside the first group of pictures.
    long = demo.make_clip(face, d / "long.mp4", seconds=3, fps=FPS, size=(320, 180), extra=["-g", "50"])
    t = {}
    # (a) The video starts 0.75 s after the audio.
    t["late_video"] = d / "late video.mp4"
    ffmpeg("-itsoffset", "0.75", "-i", base, *tone(2.5), "-map", "0:v", "-map", "1:a", "-c:v", "copy",
           "-c:a", "aac", t["late_video"])
    # (b) A stream-copy cut at 0.52 s, not a keyframe: the file keeps the frames from the
    # keyframe before and an edit list that starts presenting at the cut.
    t["edit_list"] = d / "edit list.mp4"
    ffmpeg("-ss", "0.52", "-i", long, "-c", "copy", t["edit_list"])
    # (c) The audio starts 0.6 s after the video.
    t["late_audio"] = d / "late audio.mp4"
    ffmpeg("-i", base, "-itsoffset", "0.6", *tone(1), "-map", "0:v", "-map", "1:a", "-c:v", "copy",
           "-c:a", "aac", t["late_audio"])
    # (d) 3 s of audio around 1.5 s of video that starts 0.4 s in.
    t["long_audio"] = d / "long audio.mp4"
    ffmpeg("-itsoffset", "0.4", "-i", short, *tone(3), "-map", "0:v", "-map", "1:a", "-c:v", "copy",
           "-c:a", "aac", t["long_audio"])
    # Cut from a stream: MPEG-TS, whose timestamps start at 1.4 s, the audio after the video
    # (ffmpeg shifts such a file by its start; the offset must survive that).
    t["stream_cut"] = d / "stream cut.ts"
    ffmpeg("-i", t["late_audio"], "-c", "copy", "-f", "mpegts", t["stream_cut"])
    # Two audio tracks (PCM, which MP4 does not carry as is, and Opus) and a subtitle track.
    srt = d / "subtitles.srt"
    srt.write_text("1\n00:00:00,500 --> 00:00:01,500\nhello\n")
    t["tracks"] = d / "tracks.mkv"
    ffmpeg("-itsoffset", "0.5", "-i", base, *tone(2.5), *tone(2, 660, 44100), "-i", srt,
           "-map", "0:v", "-map", "1:a", "-map", "2:a", "-map", "3", "-c:v", "copy", "-c:a:0", "pcm_s16le",
           "-c:a:1", "libopus", "-c:s", "srt", "-metadata:s:s:0", "language=eng", t["tracks"])
    # (e) A shot without a face (a dark, grainy grey) between two with one, a keyframe every second on
    # the cuts: its group of pictures is copied from the target (copy_unswapped), the rest encoded.
    t["cutaway"] = d / "cutaway.mp4"
    three = demo.make_clip(face, d / "three.mp4", seconds=3, fps=FPS, size=(320, 180), audio=False)
    ffmpeg("-i", three, "-f", "lavfi", "-i", f"color=c=0x181818:s=320x180:r={FPS}", *tone(3),
           "-filter_complex", "[1:v]noise=alls=3:allf=t,format=yuv420p[dark];"
           "[0:v][dark]overlay=enable='gte(t,1)*lt(t,2)',format=yuv420p[v]", "-map", "[v]", "-map", "2:a",
           "-frames:v", str(3 * FPS), "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-g", str(FPS),
           "-sc_threshold", "0", "-c:a", "aac", "-t", "3", t["cutaway"])
    source = d / "astronaut.png"
    demo.write_astronaut(source)
    return t, source


def test_the_targets_have_the_timing_they_are_made_for(targets):
    t, _ = targets
    assert av_offset(t["late_video"]) == pytest.approx(0.75, abs=0.001)
    assert av_offset(t["late_audio"]) == pytest.approx(-0.6, abs=0.03)  # the AAC priming
    assert av_offset(t["long_audio"]) == pytest.approx(0.4, abs=0.001)
    assert first_time(t["stream_cut"], "video") > 1
    assert av_offset(t["stream_cut"]) == pytest.approx(av_offset(t["late_audio"]), abs=0.001)
    # A real edit list: frames handed out as discarded before the first presented one.
    with av.open(str(t["edit_list"])) as c:
        discarded = [p for p in c.demux(c.streams.video[0]) if p.size and p.is_discard]
    assert len(discarded) == 13
    assert len(presented_times(t["edit_list"])) == 62


# Each target with one segment and with several, at its own rate and sampled to 10 fps.
CASES = ["late_video", "edit_list", "late_audio", "long_audio", "cutaway"]
LAYOUTS = {"one": (30, 0), "one_sampled": (30, SAMPLED), "several": (0.5, 0), "several_sampled": (0.5, SAMPLED)}
JOBS = [f"{case}-{layout}" for case in CASES for layout in LAYOUTS] + ["stream_cut-several", "tracks-several"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, targets):
    """One run of every job: each target in every layout (the stand-in backend: fast)."""
    t, source = targets
    wd = copy_workflow(tmp_path_factory.mktemp("sync wf"))
    pin_backend(wd, "standin")
    inputs = wd / "inputs"
    inputs.mkdir()
    for path in [*t.values(), source]:
        shutil.copy(path, inputs / path.name)
    rows = []
    for job in JOBS:
        case, layout = job.split("-")
        seconds, fps = LAYOUTS[layout]
        rows.append({"name": job, "target": f"inputs/{t[case].name}", "source": f"inputs/{source.name}",
                     "segment_seconds": seconds, "fps": fps})
    write_sheet(wd / "config" / "jobs.tsv", rows)
    snakemake(wd, timeout=1800)
    return wd


@pytest.mark.parametrize("job", JOBS)
def test_result_keeps_the_targets_sync(workspace, targets, job):
    t, _ = targets
    case, layout = job.split("-")
    target, result = t[case], workspace / "results" / f"{job}.mp4"
    manifest = files.read_json(workspace / "work" / job / "segments" / "manifest.json")
    rate = Fraction(manifest["fps"])
    assert rate == (SAMPLED if layout.endswith("sampled") else FPS)
    assert (len(manifest["segments"]) > 1) == layout.startswith("several")

    # The offset between the first frame and the first sample, as the target has it.
    want, got = av_offset(target), av_offset(result)
    print(f"{job}: target offset {want:+.4f} s, result {got:+.4f} s")
    assert abs(got - want) <= FRAME
    # All of the sound, longer or shorter than the picture.
    assert audio_span(result) == pytest.approx(audio_span(target), abs=FRAME)

    # Every frame of the plan, the first one the first presented frame (no repeats before it).
    shown = presented_times(target)
    times = presented_times(result)
    assert len(times) == manifest["frames"]
    if rate == FPS:
        assert manifest["frames"] == len(shown)
    # Frame k at k/rate after the first: its place against the sound.
    audio0 = first_time(result, "audio")
    expected = [shown[0] - first_time(target, "audio") + k / float(rate) for k in range(len(times))]
    assert np.abs(np.array(times) - audio0 - expected).max() <= 0.002

    # And it shows what the target shows then: each result frame is closest to the target frame
    # last shown at its time (FrameClock), not to the ones before or after it, wherever those
    # differ from it by more than the encoding changes a frame (in the cutaway's still, grainy
    # shot, neighbouring target frames differ by 0.04-0.08 levels and the encoding by 0.15-0.2:
    # there the nearest one is chance).
    ours = decoded(result)
    theirs = decoded(target, size=ours[0].shape[::-1])
    for k, frame in enumerate(ours):
        at = shown[0] + (k + 0.5) / float(rate)
        i = max(j for j, s in enumerate(shown) if s < at - 1e-6)
        err = {j: np.abs(frame - theirs[j]).mean() for j in (i - 1, i, i + 1) if 0 <= j < len(theirs)}
        nearest = min(err, key=err.get)
        assert nearest == i or np.abs(theirs[nearest] - theirs[i]).mean() < err[i], (k, i, err)


def test_every_audio_track_is_kept_and_dropped_streams_are_named(workspace):
    result = workspace / "results" / "tracks-several.mp4"
    with av.open(str(result)) as c:
        codecs = [s.codec_context.name for s in c.streams.audio]
    assert codecs == ["aac", "opus"]  # PCM re-encoded, Opus copied
    log = (workspace / "logs" / "tracks-several" / "mux_video.log").read_text()
    assert re.search(r"WARNING .*#3 subtitle \((subrip|srt).*not kept", log), log


@pytest.fixture
def kept(workspace, targets):
    """A job run with keep_intermediates=true, and its result's frames."""
    t, source = targets
    args = ["--config", f"target=inputs/{t['late_video'].name}", f"source=inputs/{source.name}", "name=kept",
            "segment_seconds=0.5", "keep_intermediates=True"]
    snakemake(workspace, *args)
    return args, decoded(workspace / "results" / "kept.mp4")


def test_damaged_segment_is_refused_named_and_remade(workspace, kept):
    args, clean = kept
    seg = workspace / "work" / "kept" / "encoded" / "seg_0001.mp4"
    result = workspace / "results" / "kept.mp4"
    stat = seg.stat()
    data = bytearray(seg.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    seg.write_bytes(bytes(data))
    os.utime(seg, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # Snakemake sees nothing
    result.unlink()  # the mux runs again

    proc = snakemake(workspace, *args, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert not result.exists()
    assert re.search(r"'work/kept/encoded/seg_0001\.mp4' is damaged", out), out[-3000:]
    assert not seg.exists()  # removed, so the next run remakes it

    snakemake(workspace, *args)
    again = decoded(result)
    assert len(again) == len(clean)
    assert all(np.array_equal(a, b) for a, b in zip(again, clean))
    assert Path(str(seg) + ".sha256").exists()  # remade and sealed, kept with the segment


def test_segment_seals_go_after_the_mux_unless_kept(workspace):
    encoded = workspace / "work" / "late_video-several" / "encoded"
    assert not encoded.exists() or not list(encoded.iterdir())


def _segments(tmp_path, target, fps=0):
    """Plan and encode a target's segments as the workflow does (no faces pasted)."""
    from facepipe.media import video

    info = media_ffmpeg.probe(target).__dict__
    manifest = video.plan_segments(target, info, tmp_path / "segments", max_height=0, fps=fps,
                                   segment_seconds=0.5)
    paths = []
    for name in manifest["segments"]:
        paths.append(tmp_path / "encoded" / f"{name}.mp4")
        with video.SegmentWriter(paths[-1], width=manifest["width"], height=manifest["height"],
                                 fps=manifest["fps"], encoder="libx264", preset="veryfast", crf=18) as w:
            for frame in video.iter_frames(target, tmp_path / "segments", manifest, name):
                w.write(frame.i420())
    return info, manifest, paths


def test_mux_fails_and_leaves_nothing_when_ffmpeg_logs_an_error(tmp_path, targets, monkeypatch):
    t, _ = targets
    info, manifest, segments = _segments(tmp_path, t["late_video"])
    out = tmp_path / "result's dir" / "re sult.mp4"
    # An ffmpeg that does its work, logs an error and exits 0, as it does for a damaged packet.
    wrapper = tmp_path / "ffmpeg"
    wrapper.write_text(f"#!{sys.executable}\nimport subprocess, sys\n"
                       f"rc = subprocess.call([{media_ffmpeg.ffmpeg_exe()!r}, *sys.argv[1:]])\n"
                       "print('[mov @ 0x1] stream 0, offset 0x5f626e8: partial file', file=sys.stderr)\n"
                       "sys.exit(rc)\n")
    wrapper.chmod(0o755)
    monkeypatch.setattr(media_ffmpeg, "ffmpeg_exe", lambda: str(wrapper))
    with pytest.raises(files.MediaError, match="partial file") as err:
        media_ffmpeg.mux_video(segments, t["late_video"], info, out, frames=manifest["frames"], fps=manifest["fps"])
    assert "re sult.mp4" in str(err.value)
    assert list(out.parent.iterdir()) == []


def test_mux_fails_on_a_damaged_segment_and_on_a_wrong_frame_count(tmp_path, targets):
    t, _ = targets
    info, manifest, segments = _segments(tmp_path, t["late_video"])
    out = tmp_path / "result.mp4"
    with pytest.raises(files.MediaError, match=r"it has 50 video frames, 51 were planned"):
        media_ffmpeg.mux_video(segments, t["late_video"], info, out, frames=51, fps=manifest["fps"])
    assert not out.exists()
    # Chunk offsets past the end of the file: ffmpeg logs "partial file" and exits 0.
    data = bytearray(segments[1].read_bytes())
    stco = data.find(b"stco")
    data[stco + 12:stco + 16] = (10 ** 8).to_bytes(4, "big")
    segments[1].write_bytes(bytes(data))
    with pytest.raises(files.MediaError, match="result.mp4"):
        media_ffmpeg.mux_video(segments, t["late_video"], info, out, frames=manifest["frames"], fps=manifest["fps"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoded", "segments"]


def test_record_is_written_and_read_back(tmp_path, targets):
    t, _ = targets
    info, manifest, segments = _segments(tmp_path, t["late_video"])
    record = '{"facepipe": "0.1.0", "inputs": {"target": "late vidéo.mp4"}, "quote": "\'"}'
    media_ffmpeg.mux_video(segments, t["late_video"], info, tmp_path / "r.mp4", frames=manifest["frames"],
                    fps=manifest["fps"], record=record)
    assert media_ffmpeg.read_result_record(tmp_path / "r.mp4") == record
    media_ffmpeg.mux_video(segments, t["late_video"], info, tmp_path / "none.mp4", frames=manifest["frames"],
                    fps=manifest["fps"])
    assert media_ffmpeg.read_result_record(tmp_path / "none.mp4") is None
    img = np.zeros((8, 8, 3), np.uint8)
    files.write_labelled_png(img, tmp_path / "r.png", record=record)
    assert media_ffmpeg.read_result_record(tmp_path / "r.png") == record
    files.write_labelled_png(img, tmp_path / "none.png")
    assert media_ffmpeg.read_result_record(tmp_path / "none.png") is None
    (tmp_path / "junk.mp4").write_bytes(b"not media")
    assert media_ffmpeg.read_result_record(tmp_path / "junk.mp4") is None
    assert media_ffmpeg.read_result_record(tmp_path / "missing.png") is None
    # A user's own video with a synopsis of its own carries no facepipe record.
    media_ffmpeg.mux_video(segments, t["late_video"], info, tmp_path / "theirs.mp4", frames=manifest["frames"],
                    fps=manifest["fps"], record='{"title": "holiday"}')
    assert media_ffmpeg.read_result_record(tmp_path / "theirs.mp4") is None
    assert files.AI_LABEL in av.open(str(tmp_path / "r.mp4")).metadata["comment"]


def test_a_shot_without_faces_is_copied_as_the_target_has_it(workspace, targets):
    """The cutaway's group of pictures (frames 26-50) is the target's own packets: its frames are
    the target's, bit for bit; the frames with a face are swapped and encoded."""
    t, _ = targets
    log = (workspace / "logs" / "cutaway-one" / "render_segment" / "seg_0000.log").read_text()
    assert "1 group(s) of pictures, 25 frames, copied from the target" in log
    with av.open(str(workspace / "results" / "cutaway-one.mp4")) as c:
        ours = [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]
    with av.open(str(t["cutaway"])) as c:
        theirs = [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]
    assert len(ours) == len(theirs) == 3 * FPS
    assert all(np.array_equal(ours[k], theirs[k]) for k in range(FPS, 2 * FPS))
    assert not any(np.array_equal(ours[k], theirs[k]) for k in [*range(FPS), *range(2 * FPS, 3 * FPS)])
    # With segments shorter than a group of pictures nothing can be copied: encoded whole.
    several = (workspace / "logs" / "cutaway-several" / "render_segment" / "seg_0002.log").read_text()
    assert "0 group(s) of pictures, 0 frames, copied" in several
