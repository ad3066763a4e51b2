"""FFmpeg and PyAV: probing the target, running ffmpeg, muxing the result and reading its record back.

FFmpeg comes from the `imageio-ffmpeg` wheel (no system ffmpeg needed); probing uses PyAV
so that frame counts come from the real packets rather than from the container header.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

from facepipe.media.container import open_packets
from facepipe.media.filekind import sniff_image, target_kind
from facepipe.media.files import AI_LABEL, RECORD_KEY, MediaError, check_input_file, temporary_beside, write_json

log = logging.getLogger(__name__)

# Its MP4 home: the standard iTunes long-description tag (ldes). A free-form key would need
# -movflags use_metadata_tags, which moves every tag, the AI label included, out of the iTunes
# tags most players and tools read.
MP4_RECORD_TAG = "synopsis"


# Audio codecs MP4 carries as they are; anything else is re-encoded to AAC.
MP4_AUDIO_CODECS = {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"}


@dataclass
class ProbeResult:
    path: str
    is_image: bool
    width: int
    height: int
    rotation: int
    frames: int
    duration: float
    fps: str  # exact rational "num/den" measured from the packets
    header_fps: str
    has_audio: bool
    audio_codec: str | None
    audio_duration: float | None
    lost_frames: int = 0  # frames the container announces but the file no longer holds (truncated)
    # The timing the result keeps, in seconds on the target's own timeline (as its packets
    # give it, before ffmpeg's own shifting): the first presented video frame and the first
    # audio sample heard (of the first audio track; the others keep their place beside it).
    video_start: float = 0.0
    audio_start: float | None = None
    # Every audio track as {"index", "codec"}: all of them go into the result.
    audio_tracks: list = field(default_factory=list)
    # The streams the result cannot keep (subtitles, data, attachments, extra video), described.
    other_streams: list = field(default_factory=list)
    # The shape of one stored pixel, "num/den" (wider than tall above 1: anamorphic video, such as
    # DVD's 720x576 shown at 16:9); the working frames are resampled to square pixels.
    sample_aspect: str = "1/1"
    # The first frame's colour description, FFmpeg's numbers (AVColorSpace, AVColorPrimaries,
    # AVColorTransferCharacteristic; 2: not given) and whether its pixels are RGB, not YUV: the
    # result is labelled to be shown in the same colours (facepipe.media.video.output_colour).
    colour: dict = field(default_factory=dict)
    # Whether its frames are interlaced (two fields a field's time apart, woven into one frame).
    interlaced: bool = False

    def to_json(self, path: str | Path) -> None:
        write_json(path, asdict(self))


def ffmpeg_exe() -> str:
    # lazy: imageio-ffmpeg is slow to import, and only this path needs it
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(args: list[str], *, what: str, strict: bool = False) -> None:
    """Run ffmpeg with an argument list (never a shell), logging its stderr on failure.

    strict: any error ffmpeg logs is a failure, whatever its exit status. ffmpeg logs a damaged
    input packet (a demux or decode error) and carries on, exiting 0 with an output that lacks
    what it could not read; at `-loglevel error` everything it prints is such an error.
    """
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    log.info("ffmpeg (%s): %s", what, " ".join(map(str, cmd)))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    errors = proc.stderr.strip()
    if errors:
        log.info("ffmpeg stderr:\n%s", errors)
    if proc.returncode != 0:
        raise MediaError(f"ffmpeg failed while {what} (exit {proc.returncode}): {errors[-2000:]}")
    if strict and errors:
        raise MediaError(f"ffmpeg reported errors while {what} (exit 0, output not used): {errors[-2000:]}")


def probe(path: str | Path) -> ProbeResult:
    """Measure the target from its packets: exact frame count, rate, duration, rotation, audio."""
    # lazy: PyAV is slow to import, and only this path needs it
    import av

    path = check_input_file(path, "target")
    try:
        container = av.open(str(path))
    except Exception as exc:  # PyAV raises a family of errors; all mean "not media we can read"
        raise MediaError(f"target file {str(path)!r} is not a readable video or image: {exc}") from exc
    with container:
        if not container.streams.video:
            raise MediaError(f"target file {str(path)!r} has no video stream")
        vstream = container.streams.video[0]
        # By content, as the workflow decides which result a job makes (a .jfif is a still).
        is_image = target_kind(path) == "image"
        audio = container.streams.audio[0] if container.streams.audio else None
        audio_tracks = [{"index": s.index, "codec": s.codec_context.name} for s in container.streams.audio]
        other_streams = [describe_stream(s) for s in container.streams
                         if s.type != "audio" and s.index != vstream.index]
        rotation = 0
        try:
            first = next(container.decode(video=0))
            rotation = int(round(getattr(first, "rotation", 0) or 0)) % 360
        except (StopIteration, av.error.FFmpegError) as exc:
            raise MediaError(f"target file {str(path)!r} has no decodable video frame: {exc}") from exc
        width, height = first.width, first.height
        sample_aspect = _sample_aspect(vstream, path)
        colour = {"matrix": int(first.colorspace), "primaries": int(first.color_primaries),
                  "transfer": int(first.color_trc), "rgb": _is_rgb(first.format)}
        interlaced = bool(first.interlaced_frame)
        if is_image:
            return ProbeResult(str(path), True, width, height, rotation, 1, 0.0, "0/1", "0/1", False, None, None)

        frames = packets_seen = 0
        start = end = None
        audio_start = audio_end = None
        packets = []  # (is video, presented, start, end) in seconds, of every packet with data
        # Read from a fresh open, not after seek(0): a seek lands on the video's first keyframe,
        # and audio that starts before the video would lose its beginning.
        with av.open(str(path)) as reader:
            streams = [reader.streams[vstream.index]] + ([reader.streams[audio.index]] if audio is not None else [])
            try:
                for packet in reader.demux(*streams):
                    if packet.size == 0 or packet.pts is None:
                        continue
                    t0 = float(packet.pts * packet.time_base)
                    # Before an edit list's start: demuxed (a later frame may need it) but never
                    # presented; the decoder drops it, and so do the frame count and the timing.
                    packets.append((packet.stream.type == "video", not packet.is_discard, t0,
                                    t0 + float((packet.duration or 0) * packet.time_base)))
            except av.error.FFmpegError as exc:
                # A damaged tail: keep what could be read; the frame count check below reports the loss.
                log.warning("target %s: stopped reading packets at a damaged part: %s", path, exc)
        for is_video, presented, t0, t1 in packets:
            packets_seen += is_video
            if not presented:
                continue
            if is_video:
                frames += 1
                start = t0 if start is None else min(start, t0)
                end = t1 if end is None else max(end, t1)
            else:
                audio_start = t0 if audio_start is None else min(audio_start, t0)
                audio_end = t1 if audio_end is None else max(audio_end, t1)
        if frames == 0:
            raise MediaError(f"target file {str(path)!r} contains no video frames")
        header_rate = vstream.average_rate or vstream.guessed_rate or Fraction(0)
        header_frames = int(vstream.frames or 0)
        # The header counts the discarded frames too: compare it with every packet read.
        lost = max(0, header_frames - packets_seen)
        if lost:
            log.warning("target %s is truncated or damaged: %d of %d frames are readable, %d lost",
                        path, frames, header_frames, lost)
        duration = (end - start) if end is not None and end > start else 0.0
        if duration <= 0 and header_rate:
            duration = frames / float(header_rate)
        measured = (Fraction(frames) / Fraction(duration).limit_denominator(100000) if duration > 0
                    else Fraction(header_rate))
        # Prefer the header's exact rational when the packets agree with it (30000/1001 stays
        # exact), and for a truncated file, whose last packets are missing.
        if header_rate and (lost or abs(float(measured) - float(header_rate)) <= 0.01 * float(header_rate)):
            fps = Fraction(header_rate)
        else:
            fps = measured.limit_denominator(1001)
        return ProbeResult(
            path=str(path),
            is_image=False,
            width=width,
            height=height,
            rotation=rotation,
            frames=frames,
            duration=round(duration, 6),
            fps=f"{fps.numerator}/{fps.denominator}",
            header_fps=(f"{Fraction(header_rate).numerator}/{Fraction(header_rate).denominator}" if header_rate
                        else "0/1"),
            has_audio=audio is not None and audio_end is not None,
            audio_codec=audio.codec_context.name if audio is not None else None,
            audio_duration=round(audio_end - audio_start, 6) if audio_end is not None else None,
            lost_frames=lost,
            video_start=round(start, 6),
            audio_start=(round(_first_sample_time(path, audio_start), 6)
                         if audio_end is not None else None),
            audio_tracks=audio_tracks if audio_end is not None else [],
            other_streams=other_streams,
            sample_aspect=f"{sample_aspect.numerator}/{sample_aspect.denominator}",
            colour=colour,
            interlaced=interlaced,
        )


def _sample_aspect(vstream, path) -> Fraction:
    """The stream's sample aspect ratio as a player takes it: the container's, else the codec's;
    1 when neither gives one, or when it is implausible (a damaged header)."""
    sar = vstream.sample_aspect_ratio or vstream.codec_context.sample_aspect_ratio
    if not sar or sar <= 0:
        return Fraction(1)
    sar = Fraction(sar)
    if not Fraction(1, 4) <= sar <= 4:
        log.warning("target %s: sample aspect ratio %s ignored (not plausible); square pixels assumed", path, sar)
        return Fraction(1)
    return sar


def _is_rgb(pix_fmt) -> bool:
    """Whether a pixel format holds RGB (or palette) values, not YUV: turned into YUV here, by BT.601."""
    name = pix_fmt.name
    return name.startswith(("rgb", "bgr", "gbr", "argb", "abgr", "0rgb", "0bgr", "x2rgb", "x2bgr", "pal8"))


def describe_stream(stream) -> str:
    """'#2 subtitle (mov_text, eng, "Director's comments")': a stream named for a log line."""
    kind = stream.type
    if kind == "video" and stream.disposition & 0x400:  # AV_DISPOSITION_ATTACHED_PIC: cover art
        kind = "attached picture"
    try:
        codec = stream.codec_context.name
    except Exception:  # attachments and data streams may have no codec context
        codec = None
    meta = stream.metadata
    details = [d for d in (codec, meta.get("language"), meta.get("title"), meta.get("filename")) if d]
    return f"#{stream.index} {kind}" + (f" ({', '.join(details)})" if details else "")


def _first_sample_time(path: Path, fallback: float) -> float:
    """When the first audio sample is heard: the first decoded frame's time. The decoder drops
    the samples an edit list or the encoder's priming says to skip, which a packet's pts does
    not show (a stream-copy cut starts its audio inside a packet)."""
    # lazy: PyAV is slow to import, and only this path needs it
    import av

    try:
        first = first_frame_time(path, "audio")
    except av.error.FFmpegError as exc:
        log.warning("target %s: could not decode its first audio frame (%s); using its first packet's time",
                    path, exc)
        first = None
    return fallback if first is None else first


def _concat_line(path: Path) -> str:
    # The concat demuxer's own quoting: a single quote is closed, escaped and reopened.
    return "file '" + str(path.resolve()).replace("'", "'\\''") + "'\n"


def mux_video(segments: list[str | Path], target: str | Path, probe_info: dict, out: str | Path, *,
              frames: int, fps: str, record: str | None = None) -> None:
    """Concatenate encoded segments and put the original audio back; label the file as AI-generated.

    The result keeps the target's timing: its first frame sits as far from the first audio
    sample as the target's first presented frame does, and every later frame k at k/fps after
    it, as the segments were planned (FrameClock), so every frame keeps its place against the
    sound. Every audio track is kept (copied when MP4 carries its codec, else AAC); any other
    stream is named in a warning. The result is checked before it appears under its name:
    ffmpeg reported no error, it has `frames` video frames lasting frames/fps (within a frame),
    every audio track and the target's offset between picture and sound (within a frame).
    Anything else raises MediaError naming the file, and no result is left.

    record: written into the result's `synopsis` tag (read_result_record).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    info = probe_info
    rate = Fraction(fps)
    # The concat keeps the first segment's codec record (an H.264 avcC: the parameter sets its
    # slices name by id): segments that carry other ones (encoded by another build or version of the
    # encoder, kept from an earlier run) would decode with the wrong ones, without an error.
    records = {record for record in map(_codec_record, segments) if record is not None}
    if len(records) > 1:
        raise MediaError(f"muxing {out}: the encoded segments in {Path(segments[0]).parent} were not all made by "
                         f"the same encoder and settings (their codec records differ); remove that folder and rerun")
    tracks = (info.get("audio_tracks") or []) if info.get("has_audio") else []
    listing = temporary_beside(out, ".concat.txt")
    listing.write_text("".join(_concat_line(Path(s)) for s in segments))
    tmp = temporary_beside(out, out.suffix)
    # -xerror: stop at an error ffmpeg treats as one (a packet it cannot decode); the errors it
    # only logs and carries on from (a damaged demuxed packet, exit 0) fail the strict run below.
    args = ["-xerror"]
    if tracks:
        # Timestamps as the target's packets give them (-copyts), both inputs shifted by the
        # same base so the earlier stream starts at 0: the segments, which start at 0, by the
        # first presented frame's time, the target by nothing more. ffmpeg's own shifting
        # (each input by its start time) would depend on how this ffmpeg computes the target's
        # start (discarded packets, streams not used) and put the picture at the sound's start.
        v0, a0 = info["video_start"], info["audio_start"]
        base = min(v0, a0)
        args += ["-copyts", "-itsoffset", f"{v0 - base:.6f}", "-f", "concat", "-safe", "0", "-i", str(listing),
                 "-itsoffset", f"{-base:.6f}", "-i", str(target), "-map", "0:v:0"]
        for n, track in enumerate(tracks):
            args += ["-map", f"1:{track['index']}"]
            if track["codec"] in MP4_AUDIO_CODECS:
                args += [f"-c:a:{n}", "copy"]
            else:
                args += [f"-c:a:{n}", "aac", f"-b:a:{n}", "192k"]
        args += ["-c:v", "copy"]
    else:
        args += ["-f", "concat", "-safe", "0", "-i", str(listing), "-map", "0:v:0", "-c:v", "copy"]
    for stream in info.get("other_streams") or []:
        log.warning("target %s: stream %s is not kept in the result (only the swapped video and the "
                    "audio tracks are)", target, stream)
    args += ["-metadata", f"comment={AI_LABEL}", "-metadata", f"description={AI_LABEL}"]
    if record is not None:
        args += ["-metadata", f"{MP4_RECORD_TAG}={record}"]
    args += ["-movflags", "+faststart", "-f", "mp4", str(tmp)]
    try:
        run_ffmpeg(args, what=f"muxing {out} from {len(segments)} segment(s) in {Path(segments[0]).parent}",
                   strict=True)
        problem = _check_result(tmp, frames=frames, rate=rate, tracks=len(tracks),
                                offset=info["video_start"] - info["audio_start"] if tracks else None)
        if problem:
            raise MediaError(f"muxing {out}: the result is wrong and was not kept: {problem}")
        os.replace(tmp, out)
    finally:
        listing.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)


def _codec_record(path: str | Path) -> bytes | None:
    """A video file's codec record (its first video stream's extradata; empty if none); None where
    the file cannot be read (the mux itself then fails on it, naming the result)."""
    # lazy: PyAV is slow to import, and only this path needs it
    import av

    try:
        with open_packets(path) as container:
            return bytes(container.streams.video[0].codec_context.extradata or b"")
    except (av.error.FFmpegError, IndexError):
        return None


def _check_result(path: Path, *, frames: int, rate: Fraction, tracks: int, offset: float | None) -> str | None:
    """What is wrong with a muxed result, or None: its video frame count (packets, not decoded),
    its video duration, its audio track count, its offset between picture and sound."""
    # lazy: PyAV is slow to import, and only this path needs it
    import av

    frame = 1 / float(rate)
    try:
        with open_packets(path) as container:
            vstream = container.streams.video[0]
            got_tracks = len(container.streams.audio)
            count, first, last = 0, None, None
            for packet in container.demux(vstream):
                if packet.size == 0 or packet.pts is None:
                    continue
                count += 1
                t0 = float(packet.pts * packet.time_base)
                t1 = t0 + float((packet.duration or 0) * packet.time_base)
                first = t0 if first is None else min(first, t0)
                last = t1 if last is None else max(last, t1)
    except (av.error.FFmpegError, IndexError) as exc:
        return f"it cannot be read back: {exc}"
    if count != frames:
        return f"it has {count} video frames, {frames} were planned"
    duration = (last - first) if count else 0.0
    if abs(duration - frames * frame) > frame:
        return f"its video lasts {duration:.3f} s, {frames} frames at {rate} fps last {frames * frame:.3f} s"
    if got_tracks != tracks:
        return f"it has {got_tracks} audio track(s), the target has {tracks}"
    if offset is not None:
        try:
            got = first_frame_time(path, "video") - first_frame_time(path, "audio")
        except (av.error.FFmpegError, TypeError) as exc:  # TypeError: a stream without a frame
            return f"its first frames cannot be decoded: {exc}"
        if abs(got - offset) > frame:
            return (f"its picture starts {got:+.3f} s from its sound, the target's {offset:+.3f} s "
                    f"(more than a frame apart)")
    return None


def first_frame_time(path: str | Path, kind: str) -> float | None:
    """The time of the first decoded frame of the file's first video or audio stream: the first
    frame shown, the first sample heard (after what an edit list or priming says to skip)."""
    # lazy: PyAV is slow to import, and only this path needs it
    import av

    with av.open(str(path)) as container:
        streams = container.streams.video if kind == "video" else container.streams.audio
        if not streams:
            return None
        for frame in container.decode(streams[0]):
            if frame.pts is not None:
                return float(frame.pts * frame.time_base)
    return None


def _result_tags(path: str | Path) -> dict:
    """A result's metadata: a PNG's text chunks, an MP4's container tags ({} when unreadable)."""

    try:
        with open(path, "rb") as f:
            is_png = sniff_image(f.read(32)) == "png"
        if is_png:
            # lazy: Pillow is slow to import, and only this path needs it
            from PIL import Image

            with Image.open(path) as img:
                img.load()  # text chunks after the image data are read with it
                return dict(img.text)
        # lazy: PyAV is slow to import, and only this path needs it
        import av

        with av.open(str(path)) as container:
            return dict(container.metadata)
    except Exception:  # unreadable for whatever reason (missing, damaged, not media): no tags
        return {}


def read_result_record(path: str | Path) -> str | None:
    """The record written into a result (an MP4's `synopsis` tag, a PNG's text chunk), or None
    when it has none, cannot be read, or holds something other than a facepipe record (a user's
    own file with a synopsis of its own is not one of ours)."""
    tags = _result_tags(path)
    text = tags.get(RECORD_KEY) if RECORD_KEY in tags else tags.get(MP4_RECORD_TAG)
    try:
        record = json.loads(text) if text else None
    except ValueError:
        return None
    return text if isinstance(record, dict) and "facepipe" in record else None


def carries_ai_label(path: str | Path) -> bool:
    """Whether a file carries this workflow's AI-generated label (results of versions that wrote no
    record do): told apart from a user's own file only to word the message, never to adopt it."""
    tags = _result_tags(path)
    return AI_LABEL in (tags.get("Comment"), tags.get("comment"))
