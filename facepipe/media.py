"""Media I/O: probing the target, reading images, running ffmpeg, muxing the result.

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


class AtomicWriter:
    """A writer used as a context manager: close() (the output appears under its name) when the
    block ends normally, abort() (nothing is left) when it raises. Subclasses define both."""

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


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


def write_labelled_png(img: np.ndarray, out: str | Path) -> None:
    """Write a still result (BGR) marked as AI-generated in a PNG text chunk."""
    from PIL import Image, PngImagePlugin

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", AI_LABEL)
    info.add_text("Software", "facepipe")
    tmp = out.with_name(out.stem + ".partial.png")
    Image.fromarray(np.ascontiguousarray(img[:, :, ::-1])).save(tmp, format="PNG", pnginfo=info)
    os.replace(tmp, out)
