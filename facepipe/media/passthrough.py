"""Groups of pictures without a swapped face, copied from the target instead of encoded again.

Real footage has shots without a face to swap (a cutaway, a landscape, a face turned away), and a
render that decodes and encodes them again spends the encoder's time, most of a render's, on
frames it does not change, and loses a little of their quality. Where every frame of a closed
group of pictures (an IDR access unit up to the next one, in decode order) is left as the target
shows it, the render writes the target's own packets for it: those frames decode to the target's
own pictures, bit for bit, and the encoder does not run on them. The frames around them are
encoded as before (libx264, the job's preset and crf), one encoder run per stretch, each starting
with its own IDR.

One H.264 stream then carries two encoders' slices. Each slice names its picture parameter set
by id, so the target's parameter sets (SPS and PPS) and x264's are both put in the MP4's avcC
record, x264's numbered after the target's (its sps-id option): every slice finds its own, and a
decoder needs nothing in the stream itself (no parameter set in band). The same record is built
for every segment of a job, so the concat of the segments keeps it valid.

Used only where that is exact (`copy_source`): an H.264 target in MP4 or MOV whose avcC names its
parameter sets, 8-bit 4:2:0, upright, at its own size (no downscale, no transcoded working copy),
libx264 as the encoder; and per group of pictures only where its frames are, one for one, the
working frames at the working rate (no frame dropped or repeated by the frame-rate sampling).
Anything else is encoded as before.
"""

from __future__ import annotations

import logging
import queue
import struct
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from facepipe.media import integrity
from facepipe.media.container import open_packets
from facepipe.media.files import AtomicWriter, MediaError

log = logging.getLogger(__name__)

# The one encoder whose parameter sets can be numbered apart from the target's (x264's sps-id).
COPY_ENCODER = "libx264"
_NAL_IDR, _NAL_SPS, _NAL_PPS = 5, 7, 8
# ISO/IEC 14496-15: these profiles' avcC records carry the chroma format and bit depths after the PPS.
_HIGH_PROFILES = {100, 110, 122, 144}
# H.264 numbers SPS 0-31.
_MAX_SPS_ID = 31


@dataclass(frozen=True)
class AvcConfig:
    """An avcC record (ISO/IEC 14496-15 AVCDecoderConfigurationRecord): NAL length size and the
    parameter sets, as NAL units without start codes."""

    length_size: int
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]


def parse_avcc(data: bytes) -> AvcConfig:
    """The avcC record's parameter sets; ValueError when the bytes are not one, or carry an SPS
    extension (a target this module does not copy from)."""
    if len(data) < 7 or data[0] != 1:
        raise ValueError("not an avcC record")
    length_size = (data[4] & 3) + 1
    pos, sets = 5, []
    for mask in (0x1F, 0xFF):
        count = data[pos] & mask
        pos += 1
        units = []
        for _ in range(count):
            (size,) = struct.unpack_from(">H", data, pos)
            unit = data[pos + 2:pos + 2 + size]
            if len(unit) != size or not size:
                raise ValueError("truncated avcC record")
            units.append(bytes(unit))
            pos += 2 + size
        sets.append(tuple(units))
    sps, pps = sets
    if not sps or not pps:
        raise ValueError("avcC record without parameter sets")
    if sps[0][1] in _HIGH_PROFILES and len(data) > pos + 3 and data[pos + 3]:
        raise ValueError("avcC record with SPS extensions")
    return AvcConfig(length_size, sps, pps)


def avcc_record(sps: list[bytes], pps: list[bytes]) -> bytes:
    """An avcC record of these parameter sets (4-byte NAL lengths): profile and level the highest
    of them, the compatibility flags those all of them keep, and 4:2:0 8-bit for a High profile."""
    profile = max(s[1] for s in sps)
    compatibility = 0xFF
    for s in sps:
        compatibility &= s[2]
    level = max(s[3] for s in sps)
    out = bytes([1, profile, compatibility, level, 0xFC | 3, 0xE0 | len(sps)])
    for unit in sps:
        out += struct.pack(">H", len(unit)) + unit
    out += bytes([len(pps)])
    for unit in pps:
        out += struct.pack(">H", len(unit)) + unit
    if profile in _HIGH_PROFILES:
        # chroma_format_idc 1 (4:2:0), bit depths 8, no SPS extension.
        out += bytes([0xFC | 1, 0xF8, 0xF8, 0])
    return out


def _rbsp(unit: bytes) -> bytes:
    """A NAL unit's payload without its header and emulation-prevention bytes."""
    return unit[1:].replace(b"\x00\x00\x03", b"\x00\x00")


def _ue(payload: bytes, bit: int) -> tuple[int, int]:
    """The Exp-Golomb number (ue(v)) starting at bit `bit` of payload, and the bit after it."""
    bits = "".join(f"{b:08b}" for b in payload[bit // 8:bit // 8 + 8])[bit % 8:]
    zeros = bits.index("1")
    return int(bits[zeros:2 * zeros + 1], 2) - 1, bit + 2 * zeros + 1


def sps_id(unit: bytes) -> int:
    """seq_parameter_set_id of an SPS NAL unit (after profile, constraint flags and level)."""
    return _ue(_rbsp(unit), 24)[0]


def pps_ids(unit: bytes) -> tuple[int, int]:
    """(pic_parameter_set_id, the seq_parameter_set_id it refers to) of a PPS NAL unit."""
    payload = _rbsp(unit)
    pps, bit = _ue(payload, 0)
    return pps, _ue(payload, bit)[0]


def annexb_units(data: bytes) -> list[bytes]:
    """The NAL units of Annex B bytes (start codes 00 00 01 or 00 00 00 01)."""
    starts, pos = [], 0
    while (found := data.find(b"\x00\x00\x01", pos)) >= 0:
        starts.append(found + 3)
        pos = found + 3
    units = []
    for i, start in enumerate(starts):
        end = starts[i + 1] - 3 if i + 1 < len(starts) else len(data)
        unit = data[start:end]
        if i + 1 < len(starts):
            unit = unit.rstrip(b"\x00")  # a 4-byte start code's leading zero, trailing zeros
        if unit:
            units.append(unit)
    return units


def length_prefixed(units: list[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(u)) + u for u in units)


def nal_units(packet: bytes, length_size: int) -> list[bytes]:
    """The NAL units of a length-prefixed (MP4) H.264 packet; ValueError when its lengths do not
    add up."""
    units, pos = [], 0
    while pos < len(packet):
        if pos + length_size > len(packet):
            raise ValueError("truncated NAL length")
        size = int.from_bytes(packet[pos:pos + length_size], "big")
        if not size or pos + length_size + size > len(packet):
            raise ValueError("NAL length beyond the packet")
        units.append(packet[pos + length_size:pos + length_size + size])
        pos += length_size + size
    return units


@dataclass(frozen=True)
class CopySource:
    """A target the render may copy groups of pictures from: its avcC, the SPS id x264 takes and
    its deepest reordering (the plan's), from which every segment of the job takes the same
    decode delay, so timestamps run on across segments."""

    path: Path
    config: AvcConfig
    encoder_sps_id: int
    reorder: int


def copy_source(path: str | Path, manifest: dict, *, encoder: str, enabled: bool) -> CopySource | None:
    """The target as a CopySource, or None (with the reason in the log) where copying would not be
    exact; the same answer for every segment of a job."""

    def no(reason: str) -> None:
        log.info("groups of pictures without a swapped face are encoded again: %s", reason)
        return None

    if not enabled:
        return no("copy_unswapped is false")
    if manifest.get("is_image") or "ranges" not in manifest:
        return None
    if encoder != COPY_ENCODER:
        return no(f"the encoder is {encoder}, not {COPY_ENCODER}")
    if manifest.get("source") or manifest.get("rotation"):
        return no("the working frames are a transcoded or turned copy of the target")
    if manifest.get("reorder") is None:
        return no("the plan does not give the target's reordering")
    if manifest.get("lost_frames"):
        return no("the target has frames that could not be read (its damaged parts are not copied)")
    # lazy: PyAV is slow to import, and only this path needs it
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            ctx = stream.codec_context
            name, fmt = ctx.name, ctx.format.name if ctx.format else None
            full_range = int(ctx.color_range or 0) == 2  # AVCOL_RANGE_JPEG: the working frames are limited
            size = (ctx.width, ctx.height)
            extradata = bytes(ctx.extradata or b"")
            container_name = container.format.name
    except (av.error.FFmpegError, IndexError) as exc:
        return no(f"the target cannot be read ({exc})")
    if name != "h264":
        return no(f"the target's video is {name}, not H.264")
    if "mp4" not in container_name.split(","):
        return no("the target is not MP4/MOV")
    if fmt != "yuv420p" or full_range:
        return no(f"the target's pixels are {fmt}{' full range' if full_range else ''}, not limited-range "
                  "4:2:0 8-bit")
    if size != (manifest["width"], manifest["height"]):
        return no("the working size is not the target's")
    try:
        config = parse_avcc(extradata)
        taken = {sps_id(u) for u in config.sps}
        for unit in config.pps:
            pps, _ = pps_ids(unit)
            taken.add(pps)
    except (ValueError, IndexError) as exc:
        return no(f"the target's parameter sets cannot be read ({exc})")
    if config.length_size != 4:
        return no(f"the target's NAL lengths are {config.length_size} bytes, not 4")
    free = max(taken) + 1
    if free > _MAX_SPS_ID:
        return no("the target uses every parameter set id")
    return CopySource(path, config, free, int(manifest["reorder"]))


@dataclass(frozen=True)
class CopiedGroup:
    """A group of pictures copied as the target has it: its first and last working frame numbers
    (from 1 in the segment)."""

    first: int
    last: int


def _packet_kind(source: CopySource, data: bytes) -> bool | None:
    """True: the packet holds an IDR picture; False: another picture; None: it cannot be copied
    (unreadable NAL lengths, or parameter sets in band other than the avcC's, which the encoder's
    could collide with)."""
    try:
        units = nal_units(data, source.config.length_size)
    except ValueError:
        return None
    for unit in units:
        kind = unit[0] & 0x1F
        if (kind == _NAL_SPS and unit not in source.config.sps) or (kind == _NAL_PPS and unit not in source.config.pps):
            return None
    return any(unit[0] & 0x1F == _NAL_IDR for unit in units)


def copyable_groups(source: CopySource, manifest: dict, segment: str, swapped: set[int]) -> list[CopiedGroup]:
    """The segment's closed groups of pictures (an IDR up to the next, in decode order) that lie
    wholly within it, have no frame in `swapped` (frame numbers from 1) and whose frames are the
    working frames one for one: each shown at its own index of the frame clock, no other picture
    at an index between their first and last."""
    # lazy: PyAV is slow to import, and only this path needs it
    import av

    from facepipe.media.video import FrameClock

    seg = manifest["ranges"][segment]
    start, end = seg["start"], seg["start"] + seg["frames"]
    clock = FrameClock.of_plan(manifest)
    groups: list[dict] = []  # in decode order: idr (bool), indices, copyable (bool)
    whole_stream = False
    with open_packets(source.path) as container:
        stream = container.streams.video[0]
        if seg["seek_pts"] > manifest["t0"]:
            container.seek(seg["seek_pts"], stream=stream, backward=True, any_frame=False)
        try:
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                kind = None if packet.pts is None or packet.is_discard else _packet_kind(source, bytes(packet))
                if kind:
                    if groups and groups[-1]["indices"] and min(groups[-1]["indices"]) >= end:
                        break  # the group after the segment's last is read: that one is whole
                    groups.append({"idr": True, "indices": [], "copyable": True})
                elif not groups:
                    groups.append({"idr": False, "indices": [], "copyable": False})
                group = groups[-1]
                if packet.pts is None:
                    group["copyable"] = False
                    continue
                group["indices"].append(clock.index(packet.pts))
                group["copyable"] &= kind is not None
            else:
                whole_stream = True
        except (av.error.FFmpegError, ValueError) as exc:
            log.warning("%s: packets unreadable from a point on; the frames after it are encoded (%s)",
                        source.path, exc)
            groups = groups[:-1]
    copied = []
    for n, group in enumerate(groups):
        # The last group read is whole only where the stream ended there.
        if not (group["idr"] and group["copyable"] and group["indices"]) or (n + 1 == len(groups) and not whole_stream):
            continue
        indices = sorted(group["indices"])
        first, last = indices[0], indices[-1]
        before = [i for g in groups[:n] for i in g["indices"]]
        after = [i for g in groups[n + 1:] for i in g["indices"]]
        if not (start <= first and last < end and indices == list(range(first, last + 1))
                and (not before or max(before) < first) and (not after or min(after) > last)):
            continue
        numbers = range(first - start + 1, last - start + 2)
        if not any(k in swapped for k in numbers):
            copied.append(CopiedGroup(numbers[0], numbers[-1]))
    return copied


class PassthroughSegmentWriter(AtomicWriter):
    """SegmentWriter's interface (write, frames, close/abort) for a segment of a job that copies
    groups of pictures (copy): the frames given to write are encoded with libx264 in runs between
    the copied groups, its parameter sets numbered after the target's, and all of it muxed into one
    MP4 with the joint avcC record (module docstring). write and copy take the segment's frames in
    order, each exactly once. Every segment of the job gets the same avcC record and the same
    decode delay, so their concat is one valid stream."""

    def __init__(self, out: str | Path, source: CopySource, manifest: dict, segment: str, *, preset: str,
                 crf: int | None, threads: int, colour: dict | None):
        # lazy: PyAV is slow to import, and only this path needs it
        import av

        from facepipe.media.video import FrameClock

        self._av = av
        self.out = Path(out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.out.with_name(self.out.stem + ".partial" + self.out.suffix)
        self.source, self.segment = source, segment
        self._plan = manifest["ranges"][segment]
        self._clock = FrameClock.of_plan(manifest)
        self.width, self.height = manifest["width"], manifest["height"]
        self.rate = Fraction(manifest["fps"])
        self._time_base = 1 / self.rate
        self.options = {"preset": preset or "medium", "x264-params": f"sps-id={source.encoder_sps_id}"}
        if crf is not None and crf >= 0:
            self.options["crf"] = str(crf)
        self.threads, self.colour = threads, colour or {}
        self.frames = 0  # frames written or copied so far
        self.copied = 0
        self._decode_order = 0
        self._encoder = None
        self._run_start = 0
        self._reader = self._packets = self._pending = None
        encoder_sets = [u for u in annexb_units(bytes(self._new_encoder().extradata or b""))
                        if u[0] & 0x1F in (_NAL_SPS, _NAL_PPS)]
        sps = [u for u in encoder_sets if u[0] & 0x1F == _NAL_SPS]
        pps = [u for u in encoder_sets if u[0] & 0x1F == _NAL_PPS]
        if len(sps) != 1 or len(pps) != 1 or sps_id(sps[0]) != source.encoder_sps_id:
            raise MediaError(f"{self.out.name}: {COPY_ENCODER} did not number its parameter sets "
                             f"{source.encoder_sps_id}, apart from the target's")
        # x264 reorders by at most 2 pictures (B-pyramid); the target by what the plan measured.
        self.reorder = max(source.reorder, 2)
        self._container = av.open(str(self.tmp), "w", format="mp4")
        with av.open(str(source.path)) as template:
            self._stream = self._container.add_stream_from_template(template.streams.video[0])
        ctx = self._stream.codec_context
        ctx.extradata = avcc_record(list(source.config.sps) + sps, list(source.config.pps) + pps)
        ctx.color_range = 1 if self.colour.get("range") in ("tv", "mpeg", "limited") else 0
        for key in ("colorspace", "color_primaries", "color_trc"):
            setattr(ctx, key, int(self.colour.get(key, 2)))  # 2: unspecified
        self._stream.time_base = self._time_base
        self._closed = False
        self._done = 0  # frames the worker has encoded or copied
        self._error: BaseException | None = None
        # A few frames in hand (a 1080p frame is 3 MB): the caller decodes ahead while one encodes.
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self._thread = threading.Thread(target=self._work, name=f"encode {self.out.name}", daemon=True)
        self._thread.start()

    def _new_encoder(self):
        av = self._av
        encoder = av.CodecContext.create(COPY_ENCODER, "w")
        encoder.width, encoder.height, encoder.pix_fmt = self.width, self.height, "yuv420p"
        encoder.time_base = self._time_base
        encoder.framerate = self.rate
        encoder.thread_count = self.threads
        # Slices, one per thread, as SegmentWriter asks its ffmpeg: x264's frame threads gave frames
        # that changed from run to run here when the machine was busy (seen with 3 threads), and a
        # segment encoded again must give the same frames. A slice per thread is a fixed partition.
        encoder.thread_type = "SLICE"
        encoder.flags |= av.codec.context.Flags.global_header
        # The colour label (output_colour), as SegmentWriter's setparams gives it.
        if self.colour.get("range") in ("tv", "mpeg", "limited"):
            encoder.color_range = 1
        for key in ("colorspace", "color_primaries", "color_trc"):
            if key in self.colour:
                setattr(encoder, key, int(self.colour[key]))
        encoder.options = dict(self.options)
        encoder.open()
        return encoder

    def _mux(self, data: bytes, index: int, key: bool) -> None:
        """One access unit (length-prefixed) shown as frame `index` (from 0 in the segment), in
        decode order."""
        dts = self._decode_order - self.reorder
        if dts > index:
            raise MediaError(f"{self.out.name}: a picture decoded {self._decode_order - index} frames before it is "
                             f"shown, more than the {self.reorder} planned")
        packet = self._av.Packet(data)
        packet.stream = self._stream
        packet.time_base = self._time_base
        packet.pts, packet.dts, packet.duration = index, dts, 1
        packet.is_keyframe = key
        self._container.mux(packet)
        self._decode_order += 1

    def _drain(self, packets) -> None:
        for packet in packets:
            # x264's parameter sets are in the avcC record, not repeated in band.
            units = [u for u in annexb_units(bytes(packet)) if u[0] & 0x1F not in (_NAL_SPS, _NAL_PPS)]
            self._mux(length_prefixed(units), self._run_start + int(packet.pts), bool(packet.is_keyframe))

    def _end_run(self, _=None) -> None:
        if self._encoder is not None:
            self._drain(self._encoder.encode(None))
            self._encoder = None

    # -- the calls, in the caller's thread: each is handed to the worker in order -----------------

    def write(self, i420: np.ndarray) -> None:
        self._put(("write", np.ascontiguousarray(i420)))
        self.frames += 1

    def copy(self, group: CopiedGroup) -> None:
        """The group's packets as the target has them; the frames before it must all be written."""
        if group.first != self.frames + 1:
            raise MediaError(f"{self.out.name}: the group of pictures at frame {group.first} comes after frame "
                             f"{self.frames}")
        self._put(("copy", group))
        self.frames += group.last - group.first + 1

    def _put(self, item) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def _work(self) -> None:
        """The worker: encodes, copies and muxes what the calls hand it, in order. The caller's
        thread meanwhile decodes and pastes the next frames (the encoder releases the GIL), as the
        encoder's own process did for SegmentWriter."""
        try:
            while (item := self._queue.get()) is not None:
                if self._error is None:
                    getattr(self, "_" + item[0])(item[1])
        except BaseException as exc:  # handed to the caller's thread, which raises it
            self._error = self._named(exc)
            while self._queue.get() is not None:  # the caller's items, until it stops
                pass

    def _write(self, i420: np.ndarray) -> None:
        if self._encoder is None:
            self._encoder = self._new_encoder()
            self._run_start = self._done
        # The frame wraps the array (x264 copies the picture in during encode): copying it into a
        # new frame first took 1.2 ms a 1080p frame, an eighth of the encoder thread's time. PyAV
        # takes a wrapped yuv420p array's height as a multiple of 4, though: a height of 2 more
        # (1350, a 4:5 portrait; 270) was read 2 rows short, its chroma planes began early, and the
        # picture's top rows came out green and violet. Such frames are copied in.
        if self.height % 4:
            frame = self._av.VideoFrame.from_ndarray(i420, format="yuv420p")
        else:
            frame = self._av.VideoFrame.from_numpy_buffer(np.ascontiguousarray(i420), format="yuv420p")
        frame.pts = self._done - self._run_start
        self._drain(self._encoder.encode(frame))
        self._done += 1

    def _copy(self, group: CopiedGroup) -> None:
        self._end_run()
        start = self._plan["start"]
        want = range(start + group.first - 1, start + group.last)
        taken = 0
        while (packet := self._next_packet()) is not None:
            index = self._clock.index(packet.pts)
            if not taken and index < want.start:
                continue  # before the group (encoded, or another group's)
            data = bytes(packet)
            kind = _packet_kind(self.source, data)
            if taken and kind:
                self._pending = packet  # the next group's IDR
                break
            if index not in want or kind is None or (not taken and not kind):
                raise MediaError(f"{self.out.name}: the target's packets are not those planned for the group of "
                                 f"pictures at frame {group.first} (target changed?)")
            self._mux(data, index - start, bool(packet.is_keyframe))
            taken += 1
        if taken != len(want):
            raise MediaError(f"{self.out.name}: copied {taken} of the {len(want)} frames of the group of pictures "
                             f"at frame {group.first}")
        self._done += taken
        self.copied += taken

    def _next_packet(self):
        """The target's next packet of the segment (a plain iterator kept across copies: a generator
        delegating to it would close it when a copy stops early)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            return pending
        if self._reader is None:
            self._reader = open_packets(self.source.path)
            stream = self._reader.streams.video[0]
            if self._plan["seek_pts"] > self._clock.t0:
                self._reader.seek(self._plan["seek_pts"], stream=stream, backward=True, any_frame=False)
            self._packets = (p for p in self._reader.demux(stream) if p.size and p.pts is not None)
        return next(self._packets, None)

    def _named(self, exc: BaseException) -> BaseException:
        """An OSError about the temporary file, told about the output it becomes (the name a user
        knows: a full disk's message names it)."""
        if isinstance(exc, OSError) and exc.filename is not None and Path(exc.filename) == self.tmp:
            named = OSError(exc.errno, exc.strerror, str(self.out))
            named.__cause__ = exc
            return named
        return exc

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def close(self) -> None:
        self._put(("end_run", None))
        self._stop()
        if self._error is not None:
            raise self._error
        self._closed = True
        try:
            self._container.close()
        except OSError as exc:  # the file's index, written last, on a full disk
            raise self._named(exc) from exc
        if self._reader is not None:
            self._reader.close()
        integrity.place_sealed(self.tmp, self.out)

    def abort(self) -> None:
        self._error = self._error or MediaError("aborted")
        self._stop()
        if not self._closed:
            self._closed = True
            try:
                self._container.close()
            except Exception:  # a muxer that failed half-way; the file goes regardless
                pass
        if self._reader is not None:
            self._reader.close()
        self.tmp.unlink(missing_ok=True)


def segment_writer(out: str | Path, target: str | Path, prepared: str | Path, manifest: dict, segment: str,
                   patches: str | Path, *, encoder: str, preset: str, crf: int | None, threads: int,
                   copy_unswapped: bool):
    """The render's writer for a segment and the groups of pictures it copies: a
    PassthroughSegmentWriter where the job may copy (copy_source: the same answer for all its
    segments, so that their avcC records agree), else facepipe.media.video.SegmentWriter and none."""
    # lazy: as video.render_segment (pyarrow)
    from facepipe.media.tables import read_column
    from facepipe.media.video import SegmentWriter, source_path

    source = copy_source(source_path(target, prepared, manifest), manifest, encoder=encoder, enabled=copy_unswapped)
    if source is None:
        writer = SegmentWriter(out, width=manifest["width"], height=manifest["height"], fps=manifest["fps"],
                               encoder=encoder, preset=preset, crf=crf, threads=threads, colour=manifest["colour"])
        return writer, []
    swapped = {int(frame) for frame in read_column(patches, "frame")}
    groups = copyable_groups(source, manifest, segment, swapped)
    log.info("%s: %d group(s) of pictures, %d frames, copied from the target", segment, len(groups),
             sum(g.last - g.first + 1 for g in groups))
    writer = PassthroughSegmentWriter(out, source, manifest, segment, preset=preset, crf=crf, threads=threads,
                                      colour=manifest["colour"])
    return writer, groups
