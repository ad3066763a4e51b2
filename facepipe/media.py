"""Media I/O: probing, preparing and segmenting the target, frame files, encoding and muxing.

FFmpeg comes from the `imageio-ffmpeg` wheel (no system ffmpeg needed); probing uses PyAV
so that frame counts come from the real packets rather than from the container header.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
FRAME_PATTERN = "%06d.png"
AI_LABEL = "AI-generated: face swapped by facepipe (synthetic media)"
# Audio codecs MP4 carries as they are; anything else is re-encoded to AAC.
MP4_AUDIO_CODECS = {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"}


class MediaError(Exception):
    """A target or source file that cannot be used; the message names the file and the problem."""


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

    def to_json(self, path: str | Path) -> None:
        write_json(path, asdict(self))


def write_json(path: str | Path, data: dict) -> None:
    """Write JSON atomically so a killed job never leaves a half-written file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


@contextlib.contextmanager
def atomic_output_dir(path: str | Path):
    """Fill a directory output under a temporary name and move it into place only when complete.

    A killed job then leaves `<dir>.partial`, never a half-filled output that a later run could
    take for finished (Snakemake's own incomplete markers are not checked for every job that a
    checkpoint adds to the DAG). A stale `.partial` from an earlier kill is removed first.
    """
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    yield partial
    if path.exists():
        shutil.rmtree(path)
    os.replace(partial, path)


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(args: list[str], *, what: str) -> None:
    """Run ffmpeg with an argument list (never a shell), logging its stderr on failure."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    log.info("ffmpeg (%s): %s", what, " ".join(map(str, cmd)))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.stderr.strip():
        log.info("ffmpeg stderr:\n%s", proc.stderr.strip())
    if proc.returncode != 0:
        raise MediaError(f"ffmpeg failed while {what} (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")


def check_input_file(path: str | Path, role: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{role} file {str(path)!r} does not exist")
    if path.is_dir():
        raise MediaError(f"{role} path {str(path)!r} is a directory, expected a video or image file")
    if path.stat().st_size == 0:
        raise MediaError(f"{role} file {str(path)!r} is empty (0 bytes)")
    return path


def read_image(path: str | Path, role: str = "image") -> np.ndarray:
    """Read an image as BGR uint8; unicode and odd characters in the path are fine."""
    path = check_input_file(path, role)
    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        raise MediaError(f"{role} file {str(path)!r} is not a readable image")
    return img


def write_png(path: str | Path, img: np.ndarray, compression: int = 1) -> None:
    # Low PNG compression: frames are intermediates, speed matters more than size.
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise MediaError(f"could not encode PNG for {path}")
    buf.tofile(str(path))


def probe(path: str | Path) -> ProbeResult:
    """Measure the target from its packets: exact frame count, rate, duration, rotation, audio."""
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
        fmt = container.format.name
        is_image = "image2" in fmt or fmt.endswith("_pipe") or path.suffix.lower() in IMAGE_SUFFIXES
        audio = container.streams.audio[0] if container.streams.audio else None
        rotation = 0
        try:
            first = next(container.decode(video=0))
            rotation = int(round(getattr(first, "rotation", 0) or 0)) % 360
        except (StopIteration, av.error.FFmpegError) as exc:
            raise MediaError(f"target file {str(path)!r} has no decodable video frame: {exc}") from exc
        width, height = first.width, first.height
        if is_image:
            return ProbeResult(str(path), True, width, height, rotation, 1, 0.0, "0/1", "0/1", False, None, None)

        container.seek(0)
        frames = 0
        start = end = None
        audio_start = audio_end = None
        streams = [vstream] + ([audio] if audio is not None else [])
        try:
            packets = list(container.demux(*streams))
        except av.error.FFmpegError as exc:
            # A damaged tail: keep what could be read; the frame count check below reports the loss.
            log.warning("target %s: stopped reading packets at a damaged part: %s", path, exc)
            packets = []
        for packet in packets:
            if packet.size == 0 or packet.pts is None:
                continue
            t0 = float(packet.pts * packet.time_base)
            t1 = t0 + float((packet.duration or 0) * packet.time_base)
            if packet.stream.type == "video":
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
        lost = max(0, header_frames - frames)
        if lost:
            log.warning("target %s is truncated or damaged: %d of %d frames are readable, %d lost",
                        path, frames, header_frames, lost)
        duration = (end - start) if end is not None and end > start else 0.0
        if duration <= 0 and header_rate:
            duration = frames / float(header_rate)
        measured = Fraction(frames) / Fraction(duration).limit_denominator(100000) if duration > 0 else Fraction(header_rate)
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
            header_fps=f"{Fraction(header_rate).numerator}/{Fraction(header_rate).denominator}" if header_rate else "0/1",
            has_audio=audio is not None and audio_end is not None,
            audio_codec=audio.codec_context.name if audio is not None else None,
            audio_duration=round(audio_end - audio_start, 6) if audio_end is not None else None,
            lost_frames=lost,
        )


def output_fps(probe_info: dict, fps: float) -> Fraction:
    """The constant frame rate the workflow works at: the measured one, or a lower sampled one."""
    native = Fraction(probe_info["fps"])
    if fps and fps > 0 and Fraction(fps).limit_denominator(1001) < native:
        return Fraction(fps).limit_denominator(1001)
    return native


def _scale_filter(max_height: int) -> str:
    # Even dimensions are required by yuv420p encoders; downscaling keeps the aspect ratio.
    if max_height and max_height > 0:
        return f"scale=-2:'trunc(min(ih\\,{int(max_height)})/2)*2':flags=lanczos"
    return "scale='trunc(iw/2)*2':'trunc(ih/2)*2':flags=lanczos"


def prepare_segments(
    target: str | Path,
    probe_info: dict,
    out_dir: str | Path,
    *,
    max_height: int,
    fps: float,
    segment_seconds: float,
) -> dict:
    """Downscale, sample to a constant rate, apply rotation, and cut into frame-exact segments.

    Segments are lossless H.264 (qp 0) with a keyframe at every cut so that each one can be
    decoded independently; the returned manifest lists every segment's frame count.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    if probe_info["is_image"]:
        img = read_image(target, "target")
        h, w = img.shape[:2]
        if max_height and h > max_height:
            new_h = int(max_height)
            img = cv2.resize(img, (round(w * new_h / h), new_h), interpolation=cv2.INTER_AREA)
        write_png(out_dir / "seg_0000.png", img)
        manifest = {"is_image": True, "fps": "0/1", "segments": {"seg_0000": 1}, "frames": 1,
                    "width": img.shape[1], "height": img.shape[0]}
        write_json(out_dir / "manifest.json", manifest)
        return manifest

    rate = output_fps(probe_info, fps)
    seg_frames = max(1, round(float(segment_seconds) * float(rate)))
    # Frames after CFR conversion; the fps filter may add or drop one at the ends, so the
    # real counts are read back from the written segments below.
    vf = f"fps={rate.numerator}/{rate.denominator},{_scale_filter(max_height)},format=yuv420p"
    run_ffmpeg(
        [
            "-i", str(target),
            "-map", "0:v:0", "-an", "-sn", "-dn",
            "-vf", vf,
            "-fps_mode", "cfr",
            "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0",
            "-force_key_frames", f"expr:eq(mod(n,{seg_frames}),0)",
            "-f", "segment", "-segment_format", "matroska",
            "-segment_time", str(seg_frames / float(rate) - 0.5 / float(rate)),
            "-break_non_keyframes", "0",
            "-reset_timestamps", "1",
            str(out_dir / "seg_%04d.mkv"),
        ],
        what=f"preparing {target}",
    )
    segments = {}
    for seg in sorted(out_dir.glob("seg_*.mkv")):
        segments[seg.stem] = count_frames(seg)
    if not segments or sum(segments.values()) == 0:
        raise MediaError(f"target file {str(target)!r}: no frames could be decoded")
    # Frames the prepared video should have, from the readable packets at the working rate.
    expected = round(probe_info["frames"] * float(rate) / float(Fraction(probe_info["fps"])))
    decoded = sum(segments.values())
    lost = probe_info.get("lost_frames", 0) + max(0, expected - decoded - 1)
    if lost:
        log.warning("target %s: %d frame(s) could not be decoded and are missing from the output "
                    "(damaged or truncated file); %d frames are processed", target, lost, decoded)
    manifest = {
        "is_image": False,
        "fps": f"{rate.numerator}/{rate.denominator}",
        "segment_frames": seg_frames,
        "segments": segments,
        "frames": decoded,
        "lost_frames": lost,
    }
    first = next(iter(segments))
    manifest["width"], manifest["height"] = frame_size(out_dir / f"{first}.mkv")
    write_json(out_dir / "manifest.json", manifest)
    return manifest


def count_frames(path: str | Path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for p in c.demux(video=0) if p.size > 0)


def frame_size(path: str | Path) -> tuple[int, int]:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return s.codec_context.width, s.codec_context.height


def extract_frames(segment: str | Path, frames_dir: str | Path) -> int:
    """Decode one segment into numbered PNG frames (000001.png, ...)."""
    segment, frames_dir = Path(segment), Path(frames_dir)
    frames_dir.mkdir(parents=True, exist_ok=True)
    if segment.suffix == ".png":
        shutil.copyfile(segment, frames_dir / (FRAME_PATTERN % 1))
        return 1
    run_ffmpeg(
        ["-i", str(segment), "-map", "0:v:0", "-fps_mode", "passthrough",
         "-compression_level", "1", str(frames_dir / FRAME_PATTERN)],
        what=f"extracting frames of {segment.name}",
    )
    return len(list_frames(frames_dir))


def list_frames(frames_dir: str | Path) -> list[Path]:
    return sorted(Path(frames_dir).glob("*.png"))


def encode_segment(frames_dir: str | Path, out: str | Path, *, fps: str, encoder: str, preset: str, crf: int) -> None:
    """Encode one segment's frames with the user's encoder settings."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    args = ["-framerate", fps, "-start_number", "1", "-i", str(Path(frames_dir) / FRAME_PATTERN),
            "-c:v", encoder]
    if preset:
        args += ["-preset", preset]
    if crf is not None and crf >= 0:
        args += ["-crf", str(crf)]
    tmp = out.with_name(out.stem + ".partial" + out.suffix)
    args += ["-pix_fmt", "yuv420p", "-r", fps, "-fps_mode", "cfr", "-f", "mp4", str(tmp)]
    try:
        run_ffmpeg(args, what=f"encoding {out.name}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _concat_line(path: Path) -> str:
    # The concat demuxer's own quoting: a single quote is closed, escaped and reopened.
    return "file '" + str(path.resolve()).replace("'", "'\\''") + "'\n"


def mux_video(segments: list[str | Path], target: str | Path, probe_info: dict, out: str | Path) -> None:
    """Concatenate encoded segments and put the original audio back; label the file as AI-generated."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    listing = out.with_name(out.name + ".concat.txt")
    listing.write_text("".join(_concat_line(Path(s)) for s in segments))
    tmp = out.with_name(out.stem + ".partial" + out.suffix)
    args = ["-f", "concat", "-safe", "0", "-i", str(listing)]
    if probe_info.get("has_audio"):
        args += ["-i", str(target), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy"]
        if probe_info.get("audio_codec") in MP4_AUDIO_CODECS:
            args += ["-c:a", "copy"]
        else:
            args += ["-c:a", "aac", "-b:a", "192k"]
    else:
        args += ["-map", "0:v:0", "-c:v", "copy"]
    args += ["-metadata", f"comment={AI_LABEL}", "-metadata", f"description={AI_LABEL}",
             "-movflags", "+faststart", "-f", "mp4", str(tmp)]
    try:
        run_ffmpeg(args, what=f"muxing {out.name}")
        os.replace(tmp, out)
    finally:
        listing.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)


def write_labelled_png(frame_png: str | Path, out: str | Path) -> None:
    """Copy a still result and mark it as AI-generated in a PNG text chunk."""
    from PIL import Image, PngImagePlugin

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", AI_LABEL)
    info.add_text("Software", "facepipe")
    tmp = out.with_name(out.stem + ".partial.png")
    with Image.open(frame_png) as im:
        im.save(tmp, format="PNG", pnginfo=info)
    os.replace(tmp, out)
