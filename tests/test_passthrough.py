"""Groups of pictures without a swapped face, copied from the target (facepipe.media.passthrough)."""

import subprocess
from dataclasses import asdict

import numpy as np
import pytest

from facepipe.media import demo, ffmpeg, passthrough, video
from facepipe.media.files import MediaError


def _decoded(path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="yuv420p") for f in container.decode(video=0)]


@pytest.fixture(scope="module")
def keyed_clip(tmp_path_factory):
    """4 s at 25 fps with an IDR every 20 frames (B-frames on), and its plan in 2 s segments."""
    root = tmp_path_factory.mktemp("passthrough")
    clip = demo.make_clip(demo.insightface_image(), root / "keyed clip #1.mp4", seconds=4, size=(320, 180),
                          extra=["-g", "20", "-keyint_min", "20", "-sc_threshold", "0", "-bf", "3"])
    info = ffmpeg.probe(clip)
    manifest = video.plan_segments(clip, asdict(info),
                                   root / "plan", max_height=0, fps=0, segment_seconds=2)
    return clip, manifest, root


def _render(clip, manifest, root, segment, swapped, name, threads=1):
    source = passthrough.copy_source(clip, manifest, encoder="libx264", enabled=True)
    groups = passthrough.copyable_groups(source, manifest, segment, swapped)
    out = root / f"{name}.mp4"
    with passthrough.PassthroughSegmentWriter(out, source, manifest, segment, preset="veryfast", crf=18,
                                              threads=threads, colour=manifest["colour"]) as writer:
        video.render_segment(video.iter_frames(clip, root / "plan", manifest, segment, threads=1), {}, writer, groups)
    return out, groups, writer


def test_the_plan_measures_the_reordering(keyed_clip):
    _, manifest, _ = keyed_clip
    assert manifest["reorder"] >= 1  # B-frames: packets come ahead of their turn


def test_groups_without_a_swapped_frame_are_copied_bit_for_bit(keyed_clip):
    clip, manifest, root = keyed_clip
    segment = "seg_0000"  # 60 frames, an IDR every 20
    start, count = manifest["ranges"][segment]["start"], manifest["segments"][segment]
    # Frames 5-24 of the segment swapped: the groups at 1-20 and 21-40 hold swapped frames.
    out, groups, writer = _render(clip, manifest, root, segment, set(range(5, 25)), "mixed")
    assert [(g.first, g.last) for g in groups] == [(41, 60)]
    target = _decoded(clip)
    got = _decoded(out)
    assert len(got) == count and writer.frames == count
    copied = {n for g in groups for n in range(g.first, g.last + 1)}
    assert writer.copied == len(copied)
    for n, frame in enumerate(got, start=1):
        if n in copied:
            assert np.array_equal(frame, target[start + n - 1]), n
        else:
            assert np.abs(frame.astype(int) - target[start + n - 1]).mean() < 4, n
    # ffmpeg reads it without a complaint (the joint avcC record: two parameter sets each).
    strict = subprocess.run([ffmpeg.ffmpeg_exe(), "-v", "error", "-xerror", "-i", str(out), "-f", "null", "-"],
                            capture_output=True, text=True)
    assert strict.returncode == 0 and not strict.stderr.strip(), strict.stderr


def test_copied_groups_are_not_decoded_and_the_frames_around_them_are_the_same(keyed_clip):
    clip, manifest, root = keyed_clip
    segment = "seg_0000"
    source = passthrough.copy_source(clip, manifest, encoder="libx264", enabled=True)
    every = passthrough.copyable_groups(source, manifest, segment, set())
    # The middle group: the decoder gives up the frames before it and restarts at the next IDR.
    skip = [(every[1].first, every[1].last)]
    whole = list(video.iter_frames(clip, root / "plan", manifest, segment, threads=1))
    skipping = list(video.iter_frames(clip, root / "plan", manifest, segment, threads=1, skip=skip))
    assert [f.number for f in skipping] == [f.number for f in whole] == list(range(1, len(whole) + 1))
    for a, b in zip(whole, skipping):
        if skip[0][0] <= a.number <= skip[0][1]:
            assert b.i420() is None, a.number
        else:
            assert np.array_equal(a.i420(), b.i420()), a.number
    # A segment without a face is all copied: nothing is decoded, and that is no error.
    bare = list(video.iter_frames(clip, root / "plan", manifest, segment, threads=1,
                                  skip=[(g.first, g.last) for g in every]))
    assert [f.number for f in bare] == [f.number for f in whole] and all(f.i420() is None for f in bare)


def test_a_group_holding_one_swapped_frame_is_encoded(keyed_clip):
    clip, manifest, root = keyed_clip
    segment = "seg_0000"
    source = passthrough.copy_source(clip, manifest, encoder="libx264", enabled=True)
    every = passthrough.copyable_groups(source, manifest, segment, set())
    assert len(every) >= 2
    one = every[0]
    left = passthrough.copyable_groups(source, manifest, segment, {one.last})
    assert one not in left and every[1:] == left


def test_segments_with_and_without_copies_mux_into_one_valid_result(keyed_clip, tmp_path):
    clip, manifest, root = keyed_clip
    outs = [_render(clip, manifest, root, "seg_0000", set(), "all_copied")[0],
            _render(clip, manifest, root, "seg_0001", set(range(1, manifest["segments"]["seg_0001"] + 1)),
                    "none_copied")[0]]
    info = ffmpeg.probe(clip)
    result = tmp_path / "result 'quoted'.mp4"
    ffmpeg.mux_video(outs, clip, asdict(info), result,
                     frames=manifest["frames"], fps=manifest["fps"])
    got, target = _decoded(result), _decoded(clip)
    assert len(got) == manifest["frames"]
    first = manifest["segments"]["seg_0000"]
    assert all(np.array_equal(a, b) for a, b in zip(got[:first], target[:first]))
    assert all(np.abs(a.astype(int) - b).mean() < 4 for a, b in zip(got[first:], target[first:]))


def test_avcc_records_parse_and_join():
    sps = bytes.fromhex("67640028acd940780227e5c05a810102a0000003002000000641e30632c0")
    pps = bytes.fromhex("68ef86f2c0")
    record = passthrough.avcc_record([sps], [pps])
    config = passthrough.parse_avcc(record)
    assert config == passthrough.AvcConfig(4, (sps,), (pps,))
    assert passthrough.sps_id(sps) == 0 and passthrough.pps_ids(pps) == (0, 0)
    with pytest.raises(ValueError):
        passthrough.parse_avcc(b"\x00\x00\x00\x01" + sps)


@pytest.mark.parametrize("change, reason", [
    ({"source": "source.mkv"}, "transcoded"),
    ({"rotation": 90}, "turned"),
    ({"lost_frames": 3}, "could not be read"),
    ({"width": 160, "height": 90}, "working size"),
    ({"reorder": None}, "reordering"),
])
def test_copying_is_left_out_where_it_would_not_be_exact(keyed_clip, caplog, change, reason):
    clip, manifest, _ = keyed_clip
    caplog.set_level("INFO")
    assert passthrough.copy_source(clip, {**manifest, **change}, encoder="libx264", enabled=True) is None
    assert reason in caplog.text
    assert passthrough.copy_source(clip, manifest, encoder="libx265", enabled=True) is None
    assert passthrough.copy_source(clip, manifest, encoder="libx264", enabled=False) is None
    assert passthrough.copy_source(clip, manifest, encoder="libx264", enabled=True) is not None


def test_a_group_that_is_not_what_was_planned_stops_the_render_and_leaves_nothing(keyed_clip, tmp_path):
    clip, manifest, root = keyed_clip
    source = passthrough.copy_source(clip, manifest, encoder="libx264", enabled=True)
    out = tmp_path / "seg.mp4"
    frames = video.iter_frames(clip, root / "plan", manifest, "seg_0000", threads=1)
    with pytest.raises(MediaError, match="not those planned"):
        with passthrough.PassthroughSegmentWriter(out, source, manifest, "seg_0000", preset="veryfast", crf=18,
                                                  threads=1, colour=manifest["colour"]) as writer:
            writer.write(next(frames).i420())
            # Frames 2-20 do not begin with an IDR picture: not a group of pictures.
            writer.copy(passthrough.CopiedGroup(2, 20))
            for frame in frames:
                if frame.number > 20:
                    writer.write(frame.i420())
    assert list(tmp_path.iterdir()) == []


def test_segments_with_other_codec_records_are_not_muxed(keyed_clip, tmp_path):
    """A segment encoded with other parameter sets (another encoder build, an earlier run) would
    decode with the first segment's: the mux refuses, naming the folder."""
    from facepipe.media.video import SegmentWriter

    clip, manifest, root = keyed_clip
    ours = _render(clip, manifest, root, "seg_0000", set(), "ours")[0]
    other = tmp_path / "encoded" / "seg_0001.mp4"
    count = manifest["segments"]["seg_0001"]
    with SegmentWriter(other, width=manifest["width"], height=manifest["height"], fps=manifest["fps"],
                       encoder="libx264", preset="veryfast", crf=18, threads=1, colour=manifest["colour"]) as writer:
        for frame in video.iter_frames(clip, root / "plan", manifest, "seg_0001", threads=1):
            writer.write(frame.i420())
    assert writer.frames == count
    out = tmp_path / "result.mp4"
    with pytest.raises(MediaError, match="not all made by the same encoder and settings"):
        ffmpeg.mux_video([ours, other], clip, asdict(ffmpeg.probe(clip)), out, frames=manifest["frames"],
                         fps=manifest["fps"])
    assert not out.exists()


def test_the_encoder_threads_are_fixed_by_the_machine_not_by_cores():
    assert [video.encoder_threads(0, cores=n) for n in (1, 2, 3, 4, 16, 64)] == [1, 1, 1, 2, 8, 8]
    assert video.encoder_threads(3, cores=2) == 3  # as configured, whatever the machine
    # A video of one segment has no other render beside it: the machine's cores, up to 8.
    assert [video.encoder_threads(0, cores=n, segments=1) for n in (1, 2, 4, 16)] == [1, 2, 4, 8]
    assert video.encoder_threads(3, cores=2, segments=1) == 3


def test_several_encoder_threads_give_the_same_frames_each_time(keyed_clip, tmp_path):
    """x264's frames depend on its thread count but not on the run: a segment encoded again with the
    same count (after a kill) is the same, through the copying writer and the ffmpeg one."""
    from facepipe.media.video import SegmentWriter

    clip, manifest, root = keyed_clip
    segment = "seg_0000"
    runs = [_render(clip, manifest, tmp_path, segment, set(range(5, 25)), f"threads3_{i}", threads=3)
            for i in range(2)]
    first, second = (_decoded(out) for out, _, _ in runs)
    assert len(first) == manifest["segments"][segment]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    target = _decoded(clip)
    start = manifest["ranges"][segment]["start"]
    for n in range(41, 61):  # the copied group, as the target has it
        assert np.array_equal(first[n - 1], target[start + n - 1]), n
    strict = subprocess.run([ffmpeg.ffmpeg_exe(), "-v", "error", "-xerror", "-i", str(runs[0][0]), "-f", "null", "-"],
                            capture_output=True, text=True)
    assert strict.returncode == 0 and not strict.stderr.strip(), strict.stderr
    encoded = []
    for i in range(2):
        out = tmp_path / f"plain{i}.mp4"
        with SegmentWriter(out, width=manifest["width"], height=manifest["height"], fps=manifest["fps"],
                           encoder="libx264", preset="veryfast", crf=18, threads=3,
                           colour=manifest["colour"]) as writer:
            for frame in video.iter_frames(clip, root / "plan", manifest, segment, threads=1):
                writer.write(frame.i420())
        encoded.append(_decoded(out))
    assert len(encoded[0]) == len(first) and all(np.array_equal(a, b) for a, b in zip(*encoded))


@pytest.mark.parametrize("size", [(320, 178), (240, 270)])
def test_encoded_frames_of_a_height_off_a_multiple_of_4_are_the_frames_given(tmp_path, size):
    """A 4:5 portrait (1080x1350) has a height 2 over a multiple of 4; PyAV read such a wrapped
    yuv420p array 2 rows short, and every encoded frame's chroma started 2 rows early, its top rows
    green and violet (200 levels off). The frames the copying writer encodes are those it is given."""
    clip = demo.make_clip(demo.insightface_image(), tmp_path / "odd height.mp4", seconds=0.4, size=size)
    manifest = video.plan_segments(clip, asdict(ffmpeg.probe(clip)), tmp_path / "plan", max_height=0, fps=0,
                                   segment_seconds=2)
    out, groups, _ = _render(clip, manifest, tmp_path, "seg_0000", set(range(1, 11)), "encoded")
    assert not groups  # every frame swapped: all of them encoded
    given = [frame.i420() for frame in video.iter_frames(clip, tmp_path / "plan", manifest, "seg_0000", threads=1)]
    encoded = _decoded(out)
    assert len(encoded) == len(given) and encoded[0].shape == given[0].shape
    worst = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(encoded, given))
    print(f"\n{size[0]}x{size[1]}: the encoded frames differ from those given by {worst} levels at most")
    assert worst <= 40
