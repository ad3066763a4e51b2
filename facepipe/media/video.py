"""Working frames straight from the target: segment plans, decoding a segment, rendering it.

No frame is ever written between stages. `plan_segments` (the prepare_target checkpoint) only
reads packet timestamps and writes a manifest: for every segment, its range of output frames
and the timestamp to seek to. Each stage (detect, swap, enhance, render) then decodes just its
segment from the target itself, applying the same frame-rate sampling, rotation and downscale,
so every stage sees identical pixels. Only when the target cannot be decoded from a seek point
reliably is it transcoded once into a seekable lossless file, which then stands in for it.

Frames stay in YUV 4:2:0 as decoded; only the stages that need pixels convert to BGR (OpenCV's
BT.601 conversion both ways), and rendering converts back only the rectangle the face patches
touched, so the rest of every frame reaches the encoder as it was decoded.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from facepipe.media import integrity
from facepipe.media.ffmpeg import ffmpeg_exe, run_ffmpeg
from facepipe.media.files import AtomicWriter, MediaError, read_alpha, read_image, write_json
from facepipe.media.i420 import chroma_aligned, join_i420, region_bgr, split_i420
from facepipe.media.integrity import read_sealed_json

log = logging.getLogger(__name__)

TRANSCODED = "source.mkv"


def output_fps(probe_info: dict, fps: float) -> Fraction:
    """The constant frame rate the workflow works at: the measured one, or a lower sampled one."""
    native = Fraction(probe_info["fps"])
    if fps and fps > 0 and Fraction(fps).limit_denominator(1001) < native:
        return Fraction(fps).limit_denominator(1001)
    return native


# A sample aspect ratio within this of square is taken as square: scalers leave such ratios behind
# (423:424), and resampling every frame for a change of width no one can see would only blur it.
SQUARE_TOLERANCE = Fraction(1, 100)


def working_size(width: int, height: int, rotation: int, max_height: int,
                 sample_aspect: Fraction = Fraction(1)) -> tuple[int, int]:
    """(width, height) of the working frames: square pixels, upright, height <= max_height, even
    (4:2:0). Anamorphic video (``sample_aspect`` not 1) is resampled to the width it is shown at:
    the models see faces in their true proportions, and the result needs no aspect label."""
    if abs(Fraction(sample_aspect) - 1) > SQUARE_TOLERANCE:
        width = width * Fraction(sample_aspect)
    if rotation in (90, 270):
        width, height = height, width
    if max_height and max_height > 0 and height > max_height:
        width, height = width * max_height / height, max_height
    return max(2, int(width) // 2 * 2), max(2, int(height) // 2 * 2)


# FFmpeg's numbers (AVColorSpace, AVColorPrimaries, AVColorTransferCharacteristic): 0, 2 and 3 give
# no colour (reserved, not given); the BT.709 and the BT.601 (SMPTE 170M) matrices.
_NOT_GIVEN = (0, 2, 3)
_BT709, _SMPTE170M = 1, 6


def _looks_hd(width: int, height: int) -> bool:
    """Whether players take an unlabelled video for BT.709 (high definition) rather than BT.601."""
    return width >= 1280 or height > 576


def output_colour(probe_info: dict, size: tuple[int, int]) -> dict:
    """How the result is labelled (ffmpeg setparams' keys) so that a player shows it in the
    target's colours. Its YUV values are the target's: decoding, resizing and the range change keep
    the target's matrix, and an RGB target is converted with BT.601's (swscale's and OpenCV's).
    The target's primaries and transfer (BT.2020, HLG or PQ included) are passed on; the result is
    in limited range. An unlabelled target's matrix stays unlabelled unless the working size would
    make a player guess another one (a 1080p target worked at 480p): then the target's guess."""
    colour = probe_info["colour"]
    out = {"range": "tv"}
    matrix = _SMPTE170M if colour["rgb"] else colour["matrix"]
    if matrix in _NOT_GIVEN:
        target_hd = _looks_hd(probe_info["width"], probe_info["height"])
        matrix = (_BT709 if target_hd else _SMPTE170M) if _looks_hd(*size) != target_hd else None
    if matrix is not None:
        out["colorspace"] = matrix
    for key, option in (("primaries", "color_primaries"), ("transfer", "color_trc")):
        if colour[key] not in _NOT_GIVEN:
            out[option] = colour[key]
    return out


class FrameClock:
    """Maps input timestamps to output frame indices at the working rate (constant frame rate).

    Output frame k shows the last input frame whose timestamp rounds to k or earlier: a lower
    rate drops frames, gaps in a variable-rate input repeat the previous frame.
    """

    def __init__(self, t0: int, time_base: Fraction, rate: Fraction):
        self.t0, self.scale = t0, Fraction(time_base) * Fraction(rate)

    @classmethod
    def of_plan(cls, manifest: dict) -> "FrameClock":
        """The clock of a segment plan (plan_segments' manifest)."""
        return cls(manifest["t0"], Fraction(manifest["time_base"]), Fraction(manifest["fps"]))

    def index(self, pts: int) -> int:
        return math.floor((pts - self.t0) * self.scale + Fraction(1, 2))


def video_timestamps(path: str | Path) -> tuple[list[int], list[int], Fraction, int]:
    """Sorted presentation timestamps of the readable, presented video packets, those of the
    keyframes, their time base, and how many pictures at most a packet comes ahead of its turn to
    be shown (decode against presentation order: the delay a stream of copied packets gives its
    decoding timestamps, facepipe.media.passthrough).

    Packets flagged discard are left out: an MP4 edit list that starts the video after its
    first frames (a stream-copy cut, a clip from a stream) makes the demuxer hand out the frames
    before the edit start with that flag, and the decoder drops them. Counting them would make
    the first output frames repeat the first presented one and shift the picture against the
    sound."""
    # lazy: PyAV is slow to import, and only this path needs it
    import av

    pts, keys = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        try:
            for packet in container.demux(stream):
                if packet.size and packet.pts is not None and not packet.is_discard:
                    pts.append(int(packet.pts))
                    if packet.is_keyframe:
                        keys.append(int(packet.pts))
        except av.error.FFmpegError as exc:
            log.warning("%s: stopped reading packets at a damaged part: %s", path, exc)
        shown = sorted(set(pts))
        rank = {p: r for r, p in enumerate(shown)}
        reorder = max((i - rank[p] for i, p in enumerate(pts)), default=0)
        return shown, sorted(set(keys)), Fraction(stream.time_base), max(reorder, 0)


# A segment shorter than this is not made to keep cores busy: each segment's jobs cost their
# process starts and model loads, which a few seconds of video do not repay (a 10 s 1080p clip as
# two 5 s segments on 2 cores: the same time as one segment; a 20 s clip as two: 20% faster).
MIN_SEGMENT_SECONDS = 5.0


def segment_count(total: int, seg_frames: int, *, parallel: int = 1, min_frames: int = 1) -> int:
    """How many segments a video of ``total`` frames is planned in: as many as segments of
    ``seg_frames`` make (a last one under a quarter of that length joins the one before), rounded
    up to a multiple of ``parallel``, the cores that run segments side by side, as far as each
    stays at least ``min_frames`` long. Two cores finish two 10 s segments of a 20 s video in about
    half the time one 20 s segment takes, and four 17.5 s segments of a 70 s video sooner than
    three of 23 s (two rounds each: of 17.5 s, not of 23 s)."""
    count = 1 + max(0, int((total - seg_frames / 4) // seg_frames))
    if parallel > 1:
        side_by_side = -(-count // parallel) * parallel
        count = max(count, min(side_by_side, total // max(1, min_frames)))
    return max(1, count)


def segment_starts(total: int, seg_frames: int, keyframes: list[int], *, parallel: int = 1,
                   min_frames: int = 1) -> list[int]:
    """First output frame of every segment: segment_count segments of about equal length, each
    start moved to the nearest keyframe within half a segment's length (the later one of two as
    near), so a segment rarely has to decode frames before its start (those of the group of
    pictures it begins in). Equal lengths, not segment_seconds and a remainder: a 40 s video is two
    20 s segments, which two cores finish in the time of one, not 30 s and 10 s."""
    count = segment_count(total, seg_frames, parallel=parallel, min_frames=min_frames)
    length = total / count
    starts = [0]
    for i in range(1, count):
        want = round(i * length)
        j = bisect.bisect_left(keyframes, want)
        near = [k for k in keyframes[max(0, j - 1):j + 1] if starts[-1] < k < total and abs(k - want) <= length / 2]
        start = min(near, key=lambda k: (abs(k - want), -k)) if near else want
        if start > starts[-1]:
            starts.append(start)
    return starts


def plan_segments(
    target: str | Path,
    probe_info: dict,
    out_dir: str | Path,
    *,
    max_height: int,
    fps: float,
    segment_seconds: float,
    parallel: int = 1,
    force_transcode: bool = False,
) -> dict:
    """Plan the segments of a target and write `manifest.json` into out_dir (nothing else,
    unless the target has to be transcoded to be decodable from a seek point).

    parallel: the cores that run the segments side by side (segment_count)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if probe_info["is_image"]:
        img = load_image(target, max_height)
        manifest = {"is_image": True, "fps": "0/1", "segments": {"seg_0000": 1}, "frames": 1,
                    "width": img.shape[1], "height": img.shape[0], "max_height": max_height, "source": None}
        write_json(out_dir / "manifest.json", manifest)
        return manifest

    rate = output_fps(probe_info, fps)
    width, height = working_size(probe_info["width"], probe_info["height"], probe_info["rotation"], max_height,
                                 Fraction(probe_info["sample_aspect"]))
    seg_frames = max(1, round(float(segment_seconds) * float(rate)))
    balance = {"parallel": max(1, int(parallel)), "min_frames": max(1, round(MIN_SEGMENT_SECONDS * float(rate)))}
    source, rotation, reason = Path(target), probe_info["rotation"], None
    pts, keys, time_base, reorder = video_timestamps(target)
    if not pts:
        raise MediaError(f"target file {str(target)!r}: no frames could be decoded")
    ranges, total = _plan_ranges(pts, keys, time_base, rate, seg_frames, **balance)
    interlaced = probe_info["interlaced"]
    if force_transcode:
        reason = "asked to"
    elif interlaced:
        reason = "interlaced: deinterlaced once"
    else:
        reason = _seek_problem(target, ranges)
    if reason:
        # Transcoded once at the working rate and size, upright: later stages read it as is.
        log.warning("target %s is transcoded once, losslessly, before the work (%s)", target,
                    reason if interlaced else f"it cannot be decoded segment by segment: {reason}")
        source = out_dir / TRANSCODED
        # A keyframe at least every planned segment's length, so the segments start on them.
        gop = max(1, min(r["frames"] for r in ranges.values()))
        transcode_source(target, source, rate=rate, size=(width, height), gop=gop, deinterlace=interlaced)
        pts, keys, time_base, reorder = video_timestamps(source)
        rotation = 0
        ranges, total = _plan_ranges(pts, keys, time_base, rate, seg_frames, **balance)
    expected = round(probe_info["frames"] * float(rate) / float(Fraction(probe_info["fps"])))
    lost = probe_info["lost_frames"] + max(0, expected - total - 1)
    if lost:
        log.warning("target %s: %d frame(s) could not be read and are missing from the output "
                    "(damaged or truncated file); %d frames are processed", target, lost, total)
    manifest = {
        "is_image": False,
        "fps": f"{rate.numerator}/{rate.denominator}",
        "segment_frames": seg_frames,
        "planned_for_cores": balance["parallel"],
        "segments": {name: r["frames"] for name, r in ranges.items()},
        "ranges": ranges,
        "frames": total,
        "lost_frames": lost,
        "width": width,
        "height": height,
        "rotation": rotation,
        "t0": pts[0],
        "time_base": f"{time_base.numerator}/{time_base.denominator}",
        # Relative to the manifest's folder; None: the target itself.
        "source": TRANSCODED if reason else None,
        "transcoded_because": reason,
        "colour": output_colour(probe_info, (width, height)),
        "reorder": reorder,
    }
    write_json(out_dir / "manifest.json", manifest)
    return manifest


def output_frames(pts: list[int], clock: FrameClock) -> int:
    """Output frames at the working rate: the input's span (its last frame lasting as long as a
    typical frame) at that rate, as ffmpeg's fps filter counts them."""
    last = pts[-1] + (int(np.median(np.diff(pts))) if len(pts) > 1 else 0)
    return max(1, clock.index(last))


def _shown_at(pts: list[int], indices: list[int], k: int) -> int:
    """pts of the input frame shown as output frame k (the last one whose index is <= k)."""

    i = bisect.bisect_right(indices, k) - 1
    return pts[max(i, 0)]


def _plan_ranges(pts, keys, time_base, rate, seg_frames, *, parallel: int = 1, min_frames: int = 1
                 ) -> tuple[dict, int]:
    """The segments (start, frames, seek_pts) and the total output frame count."""
    clock = FrameClock(pts[0], time_base, rate)
    indices = [clock.index(p) for p in pts]
    total = output_frames(pts, clock)
    starts = segment_starts(total, seg_frames, sorted({clock.index(k) for k in keys}), parallel=parallel,
                            min_frames=min_frames)
    ranges = {}
    for s, (start, end) in enumerate(zip(starts, starts[1:] + [total])):
        ranges[f"seg_{s:04d}"] = {"start": start, "frames": end - start,
                                  "seek_pts": _shown_at(pts, indices, start)}
    return ranges, total


def _seek_problem(target, ranges: dict) -> str | None:
    """Why the target cannot be decoded from a segment's seek point, or None when it can.

    Checked on the middle segment after the first: seeking there must land on the planned frame.
    """
    later = list(ranges.values())[1:]
    if not later:
        return None
    want = later[len(later) // 2]["seek_pts"]
    try:
        got = _first_decoded_at_or_after(target, want)
    except Exception as exc:  # any decoder/demuxer failure means: not seekable
        return f"seeking failed: {exc}"
    if got != want:
        return f"seeking to pts {want} decoded pts {got}"
    return None


def _first_decoded_at_or_after(path, seek_pts: int) -> int | None:
    # lazy: PyAV is slow to import, and only this path needs it
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        container.seek(seek_pts, stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            if frame.pts is None:
                return None
            if frame.pts >= seek_pts:
                return int(frame.pts)
    return None


def transcode_source(target, out: Path, *, rate: Fraction, size: tuple[int, int], gop: int,
                     deinterlace: bool = False) -> None:
    tmp = out.with_name(out.stem + ".partial" + out.suffix)
    vf = f"fps={rate.numerator}/{rate.denominator},scale={size[0]}:{size[1]}:flags=lanczos,setsar=1,format=yuv420p"
    if deinterlace:
        # One frame per frame (the rate stays), each from its first field and what the fields around
        # it show: no combs of two moments in a face, nor fields blended by the scaling. Only the
        # frames flagged interlaced (a stream may mix them with progressive ones).
        vf = "bwdif=mode=send_frame:parity=auto:deint=interlaced," + vf
    try:
        run_ffmpeg(["-i", str(target), "-map", "0:v:0", "-an", "-sn", "-dn", "-vf", vf, "-fps_mode", "cfr",
                    "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-g", str(gop),
                    "-f", "matroska", str(tmp)], what=f"transcoding {target}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def load_image(path: str | Path, max_height: int) -> np.ndarray:
    img = read_image(path, "target")
    h, w = img.shape[:2]
    if max_height and h > max_height:
        img = cv2.resize(img, (round(w * max_height / h), int(max_height)), interpolation=cv2.INTER_AREA)
    return img


def load_alpha(path: str | Path, size: tuple[int, int]) -> np.ndarray | None:
    """A still target's transparency at the working size (width, height), or None where it has
    none: the result is as transparent as the target (a cut-out portrait keeps its clear background,
    whatever colour its transparent pixels hold)."""
    alpha = read_alpha(path)
    if alpha is not None and alpha.shape[::-1] != tuple(size):
        alpha = cv2.resize(alpha, tuple(size), interpolation=cv2.INTER_AREA)
    return alpha


class WorkFrame:
    """One working frame: I420 planes (video) or BGR pixels (still image), converted on demand.
    Each frame owns its arrays: a stage may change them in place.

    The stages that look at a frame only in places (detection at the detector's size, crops
    around faces) use scaled_bgr and warp_bgr, which convert only what they return.
    """

    __slots__ = ("number", "_i420", "_bgr")

    def __init__(self, number: int, i420: np.ndarray | None = None, bgr: np.ndarray | None = None):
        self.number, self._i420, self._bgr = number, i420, bgr

    @property
    def is_image(self) -> bool:
        return self._i420 is None

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width)."""
        if self._i420 is None:
            return self._bgr.shape[:2]
        return self._i420.shape[0] * 2 // 3, self._i420.shape[1]

    def bgr(self) -> np.ndarray:
        if self._bgr is None:
            self._bgr = cv2.cvtColor(self._i420, cv2.COLOR_YUV2BGR_I420)
        return self._bgr

    def i420(self) -> np.ndarray:
        return self._i420

    def bgr_rect(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """bgr()[y0:y1, x0:x1], converting only that rectangle (widened to whole chroma samples)
        where the frame has not been converted whole: the same pixels."""
        if self._bgr is not None or self._i420 is None:
            return self.bgr()[y0:y1, x0:x1]
        h, w = self.shape
        ax0, ay0, ax1, ay1 = chroma_aligned((x0, y0, x1, y1), w, h)
        return region_bgr(self.planes(), (ax0, ay0, ax1, ay1))[y0 - ay0:y1 - ay0, x0 - ax0:x1 - ax0]

    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h, w = self.shape
        return split_i420(self._i420, w, h)

    def luma(self) -> np.ndarray:
        """The frame in grey: its Y plane (a view), or a still image's BGR converted to grey."""
        if self._i420 is None:
            return cv2.cvtColor(self._bgr, cv2.COLOR_BGR2GRAY)
        return self.planes()[0]

    def scaled_bgr(self, size: tuple[int, int]) -> np.ndarray:
        """The frame resized to size (w, h; even) as cv2.resize (bilinear) resizes its BGR pixels."""
        if self._bgr is not None:
            return cv2.resize(self._bgr, size)
        w, h = size
        y, u, v = self.planes()
        # Each plane scaled on its own keeps chroma samples centred on their 2x2 blocks.
        return cv2.cvtColor(join_i420(cv2.resize(y, (w, h)), cv2.resize(u, (w // 2, h // 2)),
                                      cv2.resize(v, (w // 2, h // 2))), cv2.COLOR_YUV2BGR_I420)

    def warp_bgr(self, matrix: np.ndarray, size: int) -> np.ndarray:
        """A size x size crop: cv2.warpAffine(self.bgr(), matrix, (size, size), borderValue=0),
        warped from the planes (chroma at the crop's full resolution)."""
        matrix = np.asarray(matrix, np.float64).reshape(2, 3)
        if self._bgr is not None:
            return cv2.warpAffine(self._bgr, matrix, (size, size), borderValue=0.0)
        y, u, v = self.planes()
        # Black outside the frame, as the BGR warp gives: Y 16, U and V 128.
        wy = cv2.warpAffine(y, matrix, (size, size), borderValue=16)
        # A chroma sample c sits at luma position 2c + 0.5.
        chroma = np.hstack([2 * matrix[:, :2], (matrix[:, :2] @ (0.5, 0.5) + matrix[:, 2])[:, None]])
        wu = cv2.warpAffine(u, chroma, (size, size), borderValue=128)
        wv = cv2.warpAffine(v, chroma, (size, size), borderValue=128)
        # Converted at twice the size, so each crop pixel keeps its own chroma sample.
        big_y = cv2.resize(wy, (2 * size, 2 * size), interpolation=cv2.INTER_NEAREST)
        return np.ascontiguousarray(cv2.cvtColor(join_i420(big_y, wu, wv), cv2.COLOR_YUV2BGR_I420)[::2, ::2])


def source_path(target: str | Path, prepared_dir: str | Path, manifest: dict) -> Path:
    return Path(prepared_dir) / manifest["source"] if manifest.get("source") else Path(target)


def iter_frames(target: str | Path, prepared_dir: str | Path, manifest: dict, segment: str, *,
                threads: int = 0, skip: Sequence[tuple[int, int]] = (), ahead: int = 0) -> Iterator[WorkFrame]:
    """The working frames of one segment, numbered from 1, decoded straight from the target.

    skip: (first, last) frame numbers of closed groups of pictures that are not decoded (the
    render copies them: facepipe.media.passthrough.copyable_groups); their frames come as
    WorkFrames without pixels.
    ahead: up to this many of the frames after the segment come too, as far as the video goes,
    numbered on (detection's look_ahead)."""
    if manifest["is_image"]:
        yield WorkFrame(1, bgr=load_image(target, manifest["max_height"]))
        return
    plan = manifest["ranges"][segment]
    if "frames_at" in plan:  # chosen frames, not a range (facepipe.report.preview)
        yield from _decode_frames_at(source_path(target, prepared_dir, manifest), manifest, plan["frames_at"],
                                     threads=threads)
        return
    if ahead > 0:
        after = manifest["frames"] - plan["start"] - plan["frames"]
        plan = {**plan, "frames": plan["frames"] + max(0, min(ahead, after))}
    yield from _decode_range(source_path(target, prepared_dir, manifest), manifest, plan, threads=threads, skip=skip)


def _decode_frames_at(path: Path, manifest: dict, frames_at: list[int], *, threads: int) -> Iterator[WorkFrame]:
    """The working frames with these video frame numbers (from 1, ascending), numbered 1.. in that
    order: each segment holding some of them is decoded from its seek point up to the last one."""
    ranges = sorted((r for r in manifest["ranges"].values() if "start" in r), key=lambda r: r["start"])
    index = 0
    for i, seg in enumerate(ranges):
        end = ranges[i + 1]["start"] if i + 1 < len(ranges) else manifest["frames"]
        wanted = [f for f in frames_at if seg["start"] < f <= end]
        if not wanted:
            continue
        upto = {**seg, "frames": max(wanted) - seg["start"]}
        for frame in _decode_range(path, manifest, upto, threads=threads):
            if seg["start"] + frame.number in wanted:
                index += 1
                frame.number = index
                yield frame


def _to_working(frame, manifest: dict, rotation: int) -> np.ndarray:
    """An I420 array of the frame at working size, upright."""
    w, h = manifest["width"], manifest["height"]
    sw, sh = (h, w) if rotation in (90, 270) else (w, h)
    full_range = frame.format.name.startswith("yuvj") or frame.color_range == 2  # AVCOL_RANGE_JPEG
    same_layout = frame.format.name in ("yuv420p", "yuvj420p") and (frame.width, frame.height) == (sw, sh)
    if same_layout and full_range:
        # Full to limited range by table lookup: a tenth of what swscale takes for the same thing.
        i420 = _i420_array(frame)
        h = frame.height
        i420 = np.concatenate([cv2.LUT(i420[:h], _LUMA_TO_LIMITED), cv2.LUT(i420[h:], _CHROMA_TO_LIMITED)])
        return _rotate_i420(i420, sw, sh, rotation) if rotation else i420
    if not same_layout or full_range:
        # Limited ("MPEG") range 4:2:0 at working size: what the encoder gets and OpenCV converts.
        frame = frame.reformat(width=sw, height=sh, format="yuv420p", interpolation="LANCZOS",
                               src_color_range="JPEG" if full_range else "MPEG", dst_color_range="MPEG")
    i420 = _i420_array(frame)
    if rotation:
        i420 = _rotate_i420(i420, sw, sh, rotation)
    return i420


def _i420_array(frame) -> np.ndarray:
    """A 4:2:0 frame's planes as one I420 array (facepipe.media.i420), copied once from the
    decoder's buffers: PyAV's to_ndarray copies each plane and then joins the copies, twice the
    memory traffic (0.5 against 0.3 ms a 1080p frame, for every frame that detection and the
    render decode). The same array, byte for byte."""
    w, h = frame.width, frame.height
    if w % 2 or h % 2:
        return frame.to_ndarray(format=frame.format.name)  # (PyAV's own error: I420 needs even sides)
    out = np.empty((h * 3 // 2, w), np.uint8)
    for plane, part in zip(frame.planes, split_i420(out, w, h)):
        # A plane's rows are line_size bytes apart (padded for alignment); its pixels come first.
        ph, pw = part.shape
        part[:] = np.frombuffer(plane, np.uint8).reshape(ph, plane.line_size)[:, :pw]
    return out


_LUMA_TO_LIMITED = np.round(np.arange(256) * 219 / 255 + 16).astype(np.uint8)
_CHROMA_TO_LIMITED = np.round((np.arange(256) - 128) * 224 / 255 + 128).clip(0, 255).astype(np.uint8)


def _rotate_i420(i420: np.ndarray, w: int, h: int, rotation: int) -> np.ndarray:
    # The display matrix's rotation is counter-clockwise; showing the frame upright undoes it.
    k = {90: 1, 180: 2, 270: -1}[rotation]
    y, u, v = split_i420(i420, w, h)
    y, u, v = (np.rot90(p, k) for p in (y, u, v))
    return join_i420(y, u, v)


def _decode_range(path: Path, manifest: dict, seg: dict, *, threads: int,
                  skip: Sequence[tuple[int, int]] = ()) -> Iterator[WorkFrame]:
    # lazy: PyAV is slow to import, and only this path needs it
    import av

    start, count, seek_pts = seg["start"], seg["frames"], seg["seek_pts"]
    clock = FrameClock.of_plan(manifest)
    rotation = manifest["rotation"]
    skipped = {n for first, last in skip for n in range(first, last + 1)}
    emitted, held = 0, None

    def shown(upto: int) -> Iterator[WorkFrame]:
        """Frames emitted+1 .. upto: the held frame and its repeats (a gap in the input repeats it),
        each owning its planes (the render pastes in place: repeats get copies); skipped ones bare."""
        nonlocal emitted
        numbers = range(emitted + 1, upto + 1)
        last = max((n for n in numbers if n not in skipped), default=0)
        for n in numbers:
            emitted = n
            yield WorkFrame(n) if n in skipped else WorkFrame(n, i420=held if n == last else held.copy())

    def decoded(container, stream):
        """The stream's frames in presentation order, the skipped groups' packets never decoded."""
        in_skip = False
        for packet in container.demux(stream):
            if skipped and packet.pts is not None and clock.index(packet.pts) - start + 1 in skipped:
                if not in_skip:
                    # A closed group of pictures nobody looks at: the frames before it come out of
                    # the decoder now, and decoding restarts at the IDR picture that follows it.
                    yield from stream.decode(None)
                    stream.codec_context.flush_buffers()
                    in_skip = True
                continue
            in_skip = False
            yield from stream.decode(packet)

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        if seek_pts > manifest["t0"]:
            container.seek(seek_pts, stream=stream, backward=True, any_frame=False)
        try:
            for frame in decoded(container, stream):
                # Before the segment's first frame; also, for the first segment (seek_pts is t0,
                # the first presented frame), any frame an edit list discards, should a decoder
                # hand one out: the plan never counted those.
                if frame.pts is None or frame.pts < seek_pts:
                    continue
                k = clock.index(frame.pts) - start
                if held is not None and k > emitted:
                    yield from shown(min(k, count))
                if k >= count:
                    break
                held = _to_working(frame, manifest, rotation)
        except av.error.FFmpegError as exc:
            log.warning("%s: decoding stopped at a damaged part: %s", path, exc)
    left = sum(1 for n in range(emitted + 1, count + 1) if n not in skipped)
    if held is None and left:  # (a segment that is all copied groups needs no decoded frame)
        raise MediaError(f"{path}: no frame of segment starting at frame {start} could be decoded")
    # The last decoded frame stands for the next output frame, as every held frame does; any
    # after that could not be decoded.
    lost = left - 1
    if lost > 0:
        log.warning("%s: %d frame(s) at the end of the segment could not be decoded; repeating the last one",
                    path, lost)
    yield from shown(count)


def _widen_pipe(stream, size: int = 1 << 20) -> None:
    """Give a pipe a 1 MiB buffer (Linux), as far as the system allows. With the default 64 KiB,
    every 3 MB frame costs ffmpeg and us dozens of wake-ups each: measured here, that was a
    third of the encoder's own CPU time."""
    try:
        # lazy: imported only on the path that needs it
        import fcntl

        limit = int(Path("/proc/sys/fs/pipe-max-size").read_text())
        fcntl.fcntl(stream.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), min(size, limit))
    except (ImportError, OSError, ValueError):
        pass  # not Linux, or not allowed: the default buffer works, only slower


# x264 at 1080p gains less and less beyond about 8 threads, and the other cores decode, detect
# and swap the next segments meanwhile.
MAX_ENCODER_THREADS = 8


def encoder_threads(requested: int, cores: int | None = None, segments: int = 2) -> int:
    """The thread count of a segment's encoder: ``requested``, or for 0 this machine's cores
    (``cores``, default os.cpu_count()) shared among the segments that render side by side (half
    of them for two segments or more, all of them for a video of one segment, which has no other
    render beside it), at least 1 and at most MAX_ENCODER_THREADS.

    x264's frames depend on its thread count, so the count is fixed for a run, not taken from
    the job's share of --cores: a segment encoded again after a kill gives the same frames (the
    plan, and so the number of segments, is made once). The machine's count, not the CPUs this
    process may use: on a cluster the render job works this out again on its node, inside an
    allocation of the render's threads, and a node of 16 cores or more gives the same 8 as the
    submitting machine."""
    if requested > 0:
        return int(requested)
    if cores is None:
        cores = os.cpu_count() or 1
    return max(1, min(MAX_ENCODER_THREADS, cores // (1 if segments == 1 else 2)))


class SegmentWriter(AtomicWriter):
    """Encodes I420 frames through ffmpeg (a pipe, no files) with the user's encoder settings,
    labelled with ``colour`` (output_colour: setparams' keys) where given.

    The output appears under its name only when the encode finished; a failure leaves nothing.
    """

    def __init__(self, out: str | Path, *, width: int, height: int, fps: str, encoder: str, preset: str,
                 crf: int | None, threads: int = 0, colour: dict | None = None):
        self.out = Path(out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.out.with_name(self.out.stem + ".partial" + self.out.suffix)
        self.frames = 0
        args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
                "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{width}x{height}", "-framerate", fps,
                "-i", "pipe:0"]
        if colour:
            # The colour label (output_colour) on the frames, where every encoder reads it from.
            args += ["-vf", "setparams=" + ":".join(f"{key}={value}" for key, value in colour.items())]
        args += ["-c:v", encoder]
        if preset:
            args += ["-preset", preset]
        if crf is not None and crf >= 0:
            args += ["-crf", str(crf)]
        if threads > 0:
            # A fixed count (encoder_threads): x264's default (1.5 threads per core, for every
            # encoder running side by side) spends a fifth more CPU on the same output, and its
            # frames depend on the count. Slices, one per thread, as the copying writer encodes
            # (facepipe.media.passthrough: frame threads there changed the frames between runs).
            args += ["-threads", str(threads), "-thread_type", "slice"]
        args += ["-pix_fmt", "yuv420p", "-f", "mp4", str(self.tmp)]
        log.info("ffmpeg (encoding %s): %s", self.out.name, " ".join(args))
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=self._stderr)
        _widen_pipe(self._proc.stdin)

    def write(self, i420: np.ndarray) -> None:
        try:
            self._proc.stdin.write(memoryview(np.ascontiguousarray(i420)).cast("B"))
        except BrokenPipeError:
            self._fail()
        self.frames += 1

    def _fail(self):
        self._proc.kill()
        self._proc.wait()
        self._stderr.seek(0)
        message = self._stderr.read().decode(errors="replace").strip()[-2000:]
        self.tmp.unlink(missing_ok=True)
        raise MediaError(f"ffmpeg failed while encoding {self.out.name} (exit {self._proc.returncode}): {message}")

    def close(self) -> None:
        self._proc.stdin.close()
        if self._proc.wait() != 0:
            self._fail()
        self._stderr.close()
        # Sealed, then renamed: the mux verifies the seal, so a segment damaged while it waits
        # is remade, never muxed, and a finished segment never appears without its seal.
        integrity.place_sealed(self.tmp, self.out)

    def abort(self) -> None:
        self._proc.kill()
        self._proc.wait()
        self._stderr.close()
        self.tmp.unlink(missing_ok=True)


def render_segment(frames: Iterator[WorkFrame], patches: dict, writer: SegmentWriter, copied=()) -> int:
    """Decode, paste, encode in one pass: each frame's patches applied in YUV around the faces,
    the rest of the frame as decoded. copied: groups of pictures (facepipe.media.passthrough) the
    writer copies from the target instead, frames without patches all. Returns the number of
    frames that had patches."""
    # lazy: the patches module loads pyarrow (its tables); the stages that read or plan video without
    # pasting (prepare_target, probe, detection, mux) should not pay for it at start
    from facepipe.media.patches import apply_patches_i420

    groups = {group.first: group for group in copied}
    patched, skip_to = 0, 0
    for frame in frames:
        if frame.number <= skip_to:
            continue
        if frame.number in groups:
            writer.copy(groups[frame.number])
            skip_to = groups[frame.number].last
            continue
        todo = patches.get(frame.number)
        if not todo:
            writer.write(frame.i420())
            continue
        i420 = frame.i420()  # the frame's own planes (repeated frames are copies): pasted in place
        apply_patches_i420(i420, todo)
        writer.write(i420)
        patched += 1
    return patched


def render_image(frame: WorkFrame, patches: dict) -> np.ndarray:
    """The still result: the working image with its patches applied."""
    # lazy: as in render_segment (pyarrow)
    from facepipe.media.patches import apply_patches

    img = frame.bgr().copy()
    apply_patches(img, patches.get(frame.number, []))
    return img


def planned_starts(manifest: dict) -> dict[str, int]:
    """Each segment's first frame as a video frame number minus one (a still: seg_0000 at 0)."""
    if manifest["is_image"]:
        return {"seg_0000": 0}
    return {name: r["start"] for name, r in manifest["ranges"].items() if "start" in r}


def load_plan(plan: str | Path) -> tuple[dict, Path]:
    """A stage's plan, verified: the prepare_target folder (its manifest.json) or a plan file of
    its own (the preview's manifest); and the folder its relative paths start from."""

    plan = Path(plan)
    if plan.is_dir():
        return read_sealed_json(plan / "manifest.json", owner=plan), plan
    return read_sealed_json(plan), plan.parent
