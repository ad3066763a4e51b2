import json
from fractions import Fraction

import numpy as np
import pytest

from facepipe.media import ffmpeg, files, video


def test_probe_counts_real_frames_and_audio(media_dir):
    info = ffmpeg.probe(media_dir / "clip.mp4")
    assert (info.frames, info.width, info.height) == (50, 320, 180)
    assert Fraction(info.fps) == 25
    assert abs(info.duration - 2.0) < 1e-3
    assert info.has_audio and info.audio_codec == "aac"
    assert not ffmpeg.probe(media_dir / "silent.mp4").has_audio


def test_probe_still_image(media_dir):
    info = ffmpeg.probe(media_dir / "astronaut.png")
    assert info.is_image and info.frames == 1 and (info.width, info.height) == (512, 512)


@pytest.mark.parametrize("content, problem", [(b"", "empty"), (b"hello, not a video\n" * 50, "not a readable")])
def test_probe_rejects_bad_files_naming_them(tmp_path, content, problem):
    bad = tmp_path / "bad clip.mp4"
    bad.write_bytes(content)
    with pytest.raises(files.MediaError, match=problem) as err:
        ffmpeg.probe(bad)
    assert "bad clip.mp4" in str(err.value)


def test_probe_missing_file(tmp_path):
    with pytest.raises(files.MediaError, match="does not exist"):
        ffmpeg.probe(tmp_path / "nope.mp4")


def test_segments_are_frame_exact_and_sampled(media_dir, tmp_path):
    info = ffmpeg.probe(media_dir / "clip.mp4").__dict__
    manifest = video.plan_segments(media_dir / "clip.mp4", info, tmp_path / "a", max_height=0, fps=0,
                                      segment_seconds=0.8)
    # 50 frames at 20-frame segments: three of equal length (not 20, 20 and 10).
    assert manifest["segments"] == {"seg_0000": 17, "seg_0001": 16, "seg_0002": 17}
    assert json.loads((tmp_path / "a" / "manifest.json").read_text()) == manifest
    low = video.plan_segments(media_dir / "clip.mp4", info, tmp_path / "b", max_height=90, fps=10,
                                 segment_seconds=1)
    assert (low["width"], low["height"]) == (160, 90)
    assert Fraction(low["fps"]) == 10 and low["frames"] == 20


def test_rotation_is_applied(media_dir, tmp_path):
    rotated = tmp_path / "rotated.mp4"
    ffmpeg.run_ffmpeg(["-display_rotation", "90", "-i", str(media_dir / "clip.mp4"), "-c", "copy", str(rotated)],
                     what="tagging rotation")
    info = ffmpeg.probe(rotated)
    assert info.rotation in (90, 270)
    manifest = video.plan_segments(rotated, info.__dict__, tmp_path / "r", max_height=0, fps=0,
                                   segment_seconds=10)
    assert (manifest["width"], manifest["height"]) == (180, 320)
    # The upright picture, as ffmpeg's own autorotation shows it.
    upright = tmp_path / "upright.png"
    ffmpeg.run_ffmpeg(["-i", str(rotated), "-frames:v", "1", str(upright)], what="autorotating")
    (first,) = [f for f in video.iter_frames(rotated, tmp_path / "r", manifest, "seg_0000") if f.number == 1]
    expected = files.read_image(upright)
    assert first.bgr().shape == expected.shape
    assert np.abs(first.bgr().astype(int) - expected.astype(int)).mean() < 3


def test_concat_escapes_quotes(tmp_path):
    line = ffmpeg._concat_line(tmp_path / "it's.mp4")
    assert line.endswith("it'\\''s.mp4'\n")


def test_full_range_video_is_converted_as_ffmpeg_converts_it(tmp_path):
    from facepipe.media import demo

    clip = demo.make_clip(demo.insightface_image(), tmp_path / "full.mp4", seconds=0.4, size=(320, 180),
                          audio=False, extra=["-vf", "scale=out_range=pc,format=yuvj420p"])
    info = ffmpeg.probe(clip)
    manifest = video.plan_segments(clip, info.__dict__, tmp_path / "p", max_height=0, fps=0, segment_seconds=10)
    first = next(video.iter_frames(clip, tmp_path / "p", manifest, "seg_0000"))
    ffmpeg.run_ffmpeg(["-i", str(clip), "-frames:v", "1", str(tmp_path / "first.png")], what="decoding")
    expected = files.read_image(tmp_path / "first.png")
    assert np.abs(first.bgr().astype(int) - expected.astype(int)).mean() < 3
    # The clip really is full range, else this test would prove nothing.
    import av

    with av.open(str(clip)) as c:
        raw = next(c.decode(video=0))
    assert raw.format.name == "yuvj420p" or raw.color_range == 2


def test_decoded_planes_are_copied_into_one_i420_array_as_pyav_gives_them(media_dir):
    import av

    with av.open(str(media_dir / "clip.mp4")) as c:
        frame = next(c.decode(video=0))
    # Sizes whose plane rows are padded (line_size > width) and not, in both ranges.
    for w, h in ((frame.width, frame.height), (642, 362), (34, 18)):
        for fmt in ("yuv420p", "yuvj420p"):
            scaled = frame.reformat(width=w, height=h, format=fmt)
            assert np.array_equal(video._i420_array(scaled), scaled.to_ndarray(format=fmt)), (w, h, fmt)


def test_target_that_cannot_seek_is_transcoded_once_and_read_from_there(media_dir, tmp_path):
    info = ffmpeg.probe(media_dir / "clip.mp4").__dict__
    manifest = video.plan_segments(media_dir / "clip.mp4", info, tmp_path / "t", max_height=0, fps=0,
                                   segment_seconds=0.8, force_transcode=True)
    assert manifest["source"] == video.TRANSCODED and (tmp_path / "t" / video.TRANSCODED).exists()
    frames = list(video.iter_frames(media_dir / "clip.mp4", tmp_path / "t", manifest, "seg_0001"))
    assert [f.number for f in frames] == list(range(1, manifest["segments"]["seg_0001"] + 1))


def test_segments_start_at_the_nearest_keyframe_and_leave_no_sliver():
    # The benchmark clip's keyframes: one 3 frames before the 30 s mark (750 frames at 25 fps).
    assert video.segment_starts(1500, 750, [0, 249, 498, 747, 996, 1245, 1494]) == [0, 747]
    assert video.segment_starts(1500, 750, [0, 250, 500, 750, 1000, 1250]) == [0, 750]
    assert video.segment_starts(50, 20, [0]) == [0, 17, 33]  # no keyframe near: equal lengths
    assert video.segment_starts(50, 20, [0, 12, 24, 36, 48]) == [0, 12, 36]  # the keyframes nearest 17 and 33
    assert video.segment_starts(26, 25, [0]) == [0]  # a 1-frame last segment joins the one before
    # 40 s at 30 s segments: two of 20 s, not 30 s and 10 s (two cores finish them in the time of one).
    assert video.segment_starts(1000, 750, list(range(0, 1000, 50))) == [0, 500]


def test_a_short_video_is_split_for_the_cores_that_run_it():
    keys = list(range(0, 2000, 50))
    # 20 s at 25 fps (one 30 s segment): two 10 s segments on two cores; one on one core.
    assert video.segment_starts(500, 750, keys, parallel=2, min_frames=125) == [0, 250]
    assert video.segment_starts(500, 750, keys, parallel=1, min_frames=125) == [0]
    # Never under min_frames (5 s): an 8 s video stays whole; 20 s on 8 cores is four 5 s segments.
    assert video.segment_starts(200, 750, keys, parallel=2, min_frames=125) == [0]
    assert video.segment_starts(500, 750, keys, parallel=8, min_frames=125) == [0, 150, 250, 400]
    # A multiple of the cores: 70 s on two cores is four segments, not 30 + 30 + 10 s.
    assert video.segment_starts(1750, 750, keys, parallel=2, min_frames=125) == [0, 450, 900, 1300]
    # The 60 s benchmark clip is two 30 s segments on two cores, as before.
    assert video.segment_starts(1500, 750, keys, parallel=2, min_frames=125) == [0, 750]
    # Segments the user asked to be short stay as short.
    assert video.segment_count(100, 25, parallel=2, min_frames=125) == 4


def test_the_plan_records_the_cores_it_was_split_for(media_dir, tmp_path):
    info = ffmpeg.probe(media_dir / "clip.mp4").__dict__
    one = video.plan_segments(media_dir / "clip.mp4", info, tmp_path / "one", max_height=0, fps=0,
                              segment_seconds=30)
    two = video.plan_segments(media_dir / "clip.mp4", info, tmp_path / "two", max_height=0, fps=0,
                              segment_seconds=30, parallel=2, )
    assert one["planned_for_cores"] == 1 and two["planned_for_cores"] == 2
    # The test clip is shorter than two MIN_SEGMENT_SECONDS: one segment however many cores.
    assert info["duration"] < 2 * video.MIN_SEGMENT_SECONDS
    assert len(one["segments"]) == len(two["segments"]) == 1


def test_anamorphic_video_is_worked_at_square_pixels_as_a_player_shows_it(media_dir, tmp_path):
    # DVD-style anamorphic: 240x180 stored, each pixel 4/3 as wide as tall, shown at 320x180.
    squeezed = tmp_path / "anamorphic.mp4"
    ffmpeg.run_ffmpeg(["-i", str(media_dir / "clip.mp4"), "-vf", "scale=240:180,setsar=4/3", "-an",
                       "-c:v", "libx264", str(squeezed)], what="squeezing")
    info = ffmpeg.probe(squeezed)
    assert Fraction(info.sample_aspect) == Fraction(4, 3)
    plain_info = ffmpeg.probe(media_dir / "clip.mp4")
    plain_plan = video.plan_segments(media_dir / "clip.mp4", plain_info.__dict__, tmp_path / "plain", max_height=0,
                                     fps=0, segment_seconds=10)
    plain = next(video.iter_frames(media_dir / "clip.mp4", tmp_path / "plain", plain_plan, "seg_0000")).bgr()
    for force_transcode in (False, True):
        out = tmp_path / f"plan{force_transcode}"
        manifest = video.plan_segments(squeezed, info.__dict__, out, max_height=0, fps=0, segment_seconds=10,
                                       force_transcode=force_transcode)
        assert (manifest["width"], manifest["height"]) == (320, 180)
        first = next(video.iter_frames(squeezed, out, manifest, "seg_0000")).bgr()
        # The picture in its true proportions: close to the square-pixel clip it was made from.
        assert first.shape == (180, 320, 3)
        assert np.abs(first.astype(int) - plain.astype(int)).mean() < 6
    assert video.working_size(720, 576, 0, 0, Fraction(64, 45)) == (1024, 576)
    assert video.working_size(720, 576, 90, 0, Fraction(64, 45)) == (576, 1024)
    assert video.working_size(1440, 1080, 0, 720, Fraction(4, 3)) == (1280, 720)
    # What some scalers leave behind (the demo's own clip has it) is square: no resampling.
    assert video.working_size(640, 360, 0, 0, Fraction(423, 424)) == (640, 360)


def _colour(matrix=2, primaries=2, transfer=2, rgb=False):
    return {"matrix": matrix, "primaries": primaries, "transfer": transfer, "rgb": rgb}


def test_the_result_is_labelled_to_show_the_targets_colours():
    def label(colour, size=(1920, 1080), working=(1920, 1080)):
        return video.output_colour({"colour": colour, "width": size[0], "height": size[1]}, working)

    # As labelled: BT.709; HLG in BT.2020 passes on its primaries and transfer.
    assert label(_colour(1, 1, 1)) == {"range": "tv", "colorspace": 1, "color_primaries": 1, "color_trc": 1}
    assert label(_colour(9, 9, 18)) == {"range": "tv", "colorspace": 9, "color_primaries": 9, "color_trc": 18}
    # Unlabelled: left so while a player would guess the same matrix for the result as for the
    # target; labelled with the target's guess when the working size changes the guess.
    assert label(_colour()) == {"range": "tv"}
    assert label(_colour(), (640, 360), (640, 360)) == {"range": "tv"}
    assert label(_colour(), (1920, 1080), (852, 480)) == {"range": "tv", "colorspace": 1}
    # RGB pixels become YUV by BT.601 (swscale's and OpenCV's matrix).
    assert label(_colour(0, 1, 13, rgb=True)) == {"range": "tv", "colorspace": 6, "color_primaries": 1,
                                                  "color_trc": 13}


def test_probe_reads_the_colour_label_and_the_segment_writer_puts_it_on(tmp_path):
    from facepipe.media import demo

    clip = demo.make_clip(demo.insightface_image(), tmp_path / "709.mp4", seconds=0.2, size=(320, 180),
                          audio=False, extra=["-colorspace", "bt709"])
    info = ffmpeg.probe(clip)
    assert info.colour["matrix"] == 1 and not info.colour["rgb"]
    out = tmp_path / "labelled.mp4"
    with video.SegmentWriter(out, width=64, height=64, fps="25/1", encoder="libx264", preset="ultrafast",
                             crf=23, colour={"range": "tv", "colorspace": 1, "color_primaries": 9,
                                             "color_trc": 18}) as writer:
        for _ in range(3):
            writer.write(np.full((96, 64), 128, np.uint8))
    import av

    with av.open(str(out)) as c:
        frame = next(c.decode(video=0))
    assert (frame.colorspace, frame.color_primaries, frame.color_trc, frame.color_range) == (1, 9, 18, 1)


def test_a_still_targets_transparency_is_read_upright_and_written_back(tmp_path):
    from PIL import Image

    clear = np.zeros((40, 60, 4), np.uint8)
    clear[..., 3] = 255
    clear[:10, :, 3] = 0
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: shown after a quarter turn clockwise, as read_image shows it
    Image.fromarray(clear).transpose(Image.Transpose.ROTATE_90).save(tmp_path / "turned.png", exif=exif)
    alpha = files.read_alpha(tmp_path / "turned.png")
    assert alpha.shape == files.read_image(tmp_path / "turned.png").shape[:2] == (40, 60)
    assert (alpha[:10] == 0).all() and (alpha[10:] == 255).all()
    Image.fromarray(clear[..., :3]).save(tmp_path / "opaque.png")
    assert files.read_alpha(tmp_path / "opaque.png") is None
    assert video.load_alpha(tmp_path / "turned.png", (30, 20)).shape == (20, 30)
    files.write_labelled_png(np.zeros((40, 60, 3), np.uint8), tmp_path / "out.png", alpha=alpha)
    with Image.open(tmp_path / "out.png") as out:
        assert out.mode == "RGBA" and np.array_equal(np.asarray(out.getchannel("A")), alpha)
        assert files.AI_LABEL in out.info["Comment"]


def _comb(luma: np.ndarray) -> float:
    """How far each row lies from the mean of its neighbours: high where two fields of different
    moments are woven into one frame (combing)."""
    y = luma.astype(float)
    return float(np.abs(y[1:-1] - (y[:-2] + y[2:]) / 2).mean())


def test_interlaced_video_is_deinterlaced_once_at_the_same_frame_count(tmp_path):
    clip = tmp_path / "interlaced.mp4"
    ffmpeg.run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=50", "-t", "1", "-vf",
                       "tinterlace=interleave_top,fieldorder=tff", "-flags", "+ildct+ilme", "-c:v", "libx264",
                       "-x264-params", "tff=1", str(clip)], what="interlacing")
    info = ffmpeg.probe(clip)
    assert info.interlaced and info.frames == 25
    manifest = video.plan_segments(clip, info.__dict__, tmp_path / "p", max_height=0, fps=0, segment_seconds=10)
    assert "interlaced" in manifest["transcoded_because"] and manifest["frames"] == 25
    frames = list(video.iter_frames(clip, tmp_path / "p", manifest, "seg_0000"))
    import av

    with av.open(str(clip)) as c:
        woven = [f.to_ndarray(format="gray") for f in c.decode(video=0)]
    assert len(frames) == len(woven) == 25
    # The moving parts' combs are gone: rows agree with their neighbours as in a progressive frame.
    assert np.mean([_comb(f.planes()[0]) for f in frames]) < 0.6 * np.mean([_comb(w) for w in woven])


def test_an_iphone_heic_photo_is_read(media_dir, tmp_path):
    # (A HEIF's own rotation is applied by pillow-heif as it decodes, which then clears the EXIF one.)
    from PIL import Image
    from pillow_heif import register_heif_opener

    from facepipe.workflow.preflight import still_kind

    register_heif_opener()
    png = files.read_image(media_dir / "astronaut.png")
    Image.fromarray(png[:, :, ::-1].copy()).save(tmp_path / "IMG_0001.HEIC", quality=95)
    assert still_kind(tmp_path / "IMG_0001.HEIC") == ("heif", True)
    heic = files.read_image(tmp_path / "IMG_0001.HEIC", "source")
    assert heic.shape == png.shape
    assert np.abs(heic.astype(int) - png.astype(int)).mean() < 4


@pytest.mark.parametrize("container", ["mp4", "mkv", "ts"])
def test_a_packets_only_open_gives_the_streams_and_mp4_packets_of_a_full_open(media_dir, tmp_path, container):
    """open_packets (no picture decoded by FFmpeg's stream probe) lists the same streams with the
    same codec records and time bases as av.open in MP4, Matroska and MPEG-TS (whose streams the
    probe itself finds), and in MP4 gives the same packets, times included."""
    import av

    from facepipe.media.container import open_packets

    clip = media_dir / "clip.mp4"
    if container != "mp4":
        clip = tmp_path / f"clip.{container}"
        ffmpeg.run_ffmpeg(["-i", str(media_dir / "clip.mp4"), "-c", "copy", str(clip)], what="remuxing")

    def read(opened):
        with opened as c:
            streams = [(s.type, s.codec_context.name, bytes(s.codec_context.extradata or b""), s.time_base)
                       for s in c.streams]
            packets = [(p.stream.index, p.pts, p.dts, p.duration, p.is_keyframe, bytes(p))
                       for p in c.demux(*c.streams) if p.size]
        return streams, packets

    full, packets_only = read(av.open(str(clip))), read(open_packets(clip))
    assert [s[0] for s in full[0]] == ["video", "audio"] and len(full[1]) > 50
    assert packets_only[0] == full[0]
    if container == "mp4":
        assert packets_only[1] == full[1]
