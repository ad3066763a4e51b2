"""The per-segment tables the stages hand on (faces, patches), written and read a few frames at a time.

A segment's crops and patches can run to hundreds of MB (30 s of a group photo with
faces=many), so no stage holds a whole table: rows are written in row groups of whole frames as
they are made, and read back one row group at a time. Files are zstd-compressed Parquet, written
under a temporary name, sealed (facepipe.media.integrity) and renamed when complete; a reader verifies
the seal once before the first row group, so a table changed after it was written is never used.
Every data page also carries a CRC-32 that the reader checks (a second line, and it costs nothing
measurable next to decompression).
"""

from __future__ import annotations

import bisect
from collections import namedtuple
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from facepipe.media.files import AtomicWriter
from facepipe.media.integrity import place_sealed, reject, verify

if TYPE_CHECKING:  # pandas only where a stage asks for a DataFrame: it costs a job 0.2 s to import
    import pandas as pd

# Arrow's buffers from the C library's allocator, not its default mimalloc: mimalloc returns a freed
# row group's pages to the system, so each read faulted them in afresh (a swap's read of its tracks
# rows: 0.14-0.35 s, against 0.11 s). A job's process keeps freed memory for reuse
# (facepipe.workflow.rule_script.keep_freed_memory).
pa.set_memory_pool(pa.system_memory_pool())

_FLOATS = pa.list_(pa.float64())

FACES_SCHEMA = pa.schema([
    ("frame", pa.int64()), ("face", pa.int64()),
    ("x1", pa.float64()), ("y1", pa.float64()), ("x2", pa.float64()), ("y2", pa.float64()),
    ("score", pa.float64()), ("kps", _FLOATS), ("embedding", _FLOATS), ("landmarks", _FLOATS),
    ("hold", pa.bool_()), ("held_from", pa.int64()),
    ("crop", pa.binary()), ("crop_x", pa.int64()), ("crop_y", pa.int64()), ("crop_matrix", _FLOATS),
])

# One row per frame of a segment: a small thumbnail, what shot changes are found from
# (facepipe.faces.tracking): the frame scaled to THUMB_SIZE x THUMB_SIZE, its BGR bytes.
THUMB_SIZE = 24
FRAMES_SCHEMA = pa.schema([("frame", pa.int64()), ("thumb", pa.binary())])

# One row per face the tracker keeps (facepipe.faces.tracking), for the whole job: video frame (from 1),
# segment and the frame within it, the faces-table row whose crop it uses (face), whether it was
# interpolated over a gap (filled), its track and person, and the tracked box, keypoints and
# landmarks; embedding where detection sampled one.
TRACKS_SCHEMA = pa.schema([
    ("frame", pa.int64()), ("segment", pa.string()), ("seg_frame", pa.int64()), ("face", pa.int64()),
    ("filled", pa.bool_()), ("track", pa.int64()), ("person", pa.int64()),
    ("x1", pa.float64()), ("y1", pa.float64()), ("x2", pa.float64()), ("y2", pa.float64()),
    ("kps", _FLOATS), ("landmarks", _FLOATS), ("embedding", _FLOATS),
])

PATCHES_SCHEMA = pa.schema([
    ("frame", pa.int64()), ("face", pa.int64()), ("kind", pa.string()), ("x", pa.int64()), ("y", pa.int64()),
    ("matrix", _FLOATS), ("kps", _FLOATS), ("image", pa.binary()),
    ("mask", pa.binary()),  # the paste mask (facepipe.media.patches.Patch.mask) as PNG; null: none
])


# A row group ends at this many bytes of crops and patches, or at rows_per_group rows: a writer
# holds a group (and its Arrow copy) in memory, a reader one group at a time. At 256 rows, a 1080p
# close-up's crops (about 0.7 MB a face) made groups of 190 MB: its detection peaked at 1.35 GB and
# its swap's main process at 1.9 GB, against 0.63 and 0.62 GB with this budget.
GROUP_BYTES = 32 << 20


def table_of_rows(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """pa.Table.from_pylist(rows, schema=schema), built a column at a time from NumPy buffers: a list
    column's arrays (NumPy or lists; None for null) joined into one flat array. The same table;
    from_pylist converts each element of each array on its own, 4 times as long on the offline mesh's
    936 landmark numbers a face, and any pa.array imports pandas (0.2 s, in every job that writes a
    table)."""
    columns = []
    for field in schema:
        values = [row.get(field.name) for row in rows]
        present = np.array([v is not None for v in values], bool)
        if not pa.types.is_list(field.type):
            columns.append(_scalar_array(values, present, field.type))
            continue
        dtype = field.type.value_type.to_pandas_dtype()
        arrays = [np.asarray(v, dtype).reshape(-1) for v in values if v is not None]
        lengths = np.zeros(len(values), np.int64)
        lengths[present] = [len(a) for a in arrays]
        flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype)
        children = [pa.Array.from_buffers(field.type.value_type, len(flat), [None, pa.py_buffer(flat)])]
        buffers = [_validity(present), _offsets(lengths, field.name)]
        columns.append(pa.Array.from_buffers(field.type, len(values), buffers, children=children))
    return pa.Table.from_arrays(columns, schema=schema)


def _validity(present: np.ndarray) -> pa.Buffer | None:
    """Arrow's validity bitmap (None: no nulls)."""
    return None if present.all() else pa.py_buffer(np.packbits(present, bitorder="little"))


def _offsets(lengths: np.ndarray, name: str) -> pa.Buffer:
    """The 32-bit offsets of values of these lengths (a list's or a binary column's)."""
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    if offsets[-1] > np.iinfo(np.int32).max:  # from_pylist raises too
        raise ValueError(f"column {name}: {offsets[-1]} values in one row group, more than a column holds")
    return pa.py_buffer(offsets.astype(np.int32))


def _scalar_array(values: list, present: np.ndarray, kind: pa.DataType) -> pa.Array:
    """pa.array(values, kind) for the tables' scalar types (None: null), from NumPy buffers."""
    n = len(values)
    if pa.types.is_boolean(kind):
        bits = np.array([bool(v) if v is not None else False for v in values], bool)
        return pa.Array.from_buffers(kind, n, [_validity(present), pa.py_buffer(np.packbits(bits, bitorder="little"))])
    if pa.types.is_string(kind) or pa.types.is_binary(kind):
        data = [b"" if v is None else (v.encode() if isinstance(v, str) else bytes(v)) for v in values]
        lengths = np.array([len(d) for d in data], np.int64)
        return pa.Array.from_buffers(kind, n, [_validity(present), _offsets(lengths, str(kind)),
                                               pa.py_buffer(b"".join(data))])
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        dtype = kind.to_pandas_dtype()
        data = np.array([v if v is not None else 0 for v in values]) if n else np.zeros(0, dtype)
        if pa.types.is_integer(kind) and data.dtype.kind not in "iub" and not np.array_equal(data, np.trunc(data)):
            raise ValueError(f"a {kind} column given {data[data != np.trunc(data)][:3].tolist()}")  # as pa.array
        data = data.astype(dtype)
        return pa.Array.from_buffers(kind, n, [_validity(present), pa.py_buffer(data)])
    raise TypeError(f"no NumPy-built Arrow array for {kind}")


class TableWriter(AtomicWriter):
    """Rows to a Parquet file in row groups; add a frame's rows together so a group never
    splits a frame. The file appears under its name only when closed without an error."""

    def __init__(self, path: str | Path, schema: pa.Schema, rows_per_group: int = 256,
                 bytes_per_group: int = GROUP_BYTES):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.schema, self.rows_per_group, self.bytes_per_group = schema, rows_per_group, bytes_per_group
        # No dictionary encoding: the columns that carry the bytes (crops, patches, landmarks) never
        # repeat a value, and reading pages that Parquet began as dictionaries (it falls back to plain
        # when the dictionary fills) took 3-4 times as long as plain ones, for no smaller file.
        self._writer = pq.ParquetWriter(self.tmp, schema, compression="zstd", use_dictionary=False,
                                        write_page_checksum=True)
        self._rows: list[dict] = []
        self._bytes = 0
        self.rows = 0

    def add(self, rows: Iterable[dict]) -> None:
        rows = list(rows)
        self._rows.extend(rows)
        self._bytes += sum(len(value) for row in rows for value in row.values() if isinstance(value, bytes))
        if len(self._rows) >= self.rows_per_group or self._bytes >= self.bytes_per_group:
            self.flush()

    def flush(self) -> None:
        """End the current row group (a reader can then skip it by its statistics)."""
        if self._rows:
            self._writer.write_table(table_of_rows(self._rows, self.schema))
            self.rows += len(self._rows)
            self._rows = []
            self._bytes = 0

    def close(self) -> None:
        self.flush()
        self._writer.close()
        place_sealed(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self._writer.close()
        except Exception:  # closing a writer on a full disk fails too; the file goes regardless
            pass
        finally:
            self.tmp.unlink(missing_ok=True)



def write_table(rows: Iterable[list[dict]], path: str | Path, schema: pa.Schema) -> int:
    """Write rows given frame by frame (one list per frame); returns the number of rows."""
    with TableWriter(path, schema) as writer:
        for frame_rows in rows:
            writer.add(frame_rows)
    return writer.rows


def open_table(path: str | Path) -> pq.ParquetFile:
    """A sealed table, verified (facepipe.media.integrity.verify: a damaged one is removed and
    reported), opened with its page checksums checked as it is read."""
    verify(path)
    try:
        return pq.ParquetFile(path, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as exc:
        reject(path, f"it is not a readable Parquet table ({exc})")


def _read_groups_where(path: str | Path, columns: list[str] | None, where: tuple[str, object] | None) -> pa.Table:
    """Some columns of a table as Arrow, verified; where=(column, value) reads only the row groups
    whose statistics say they may hold that value (the caller keeps only its rows)."""
    table = open_table(path)
    if where is not None and columns is not None and where[0] not in columns:
        columns = [*columns, where[0]]
    try:
        groups = list(range(table.num_row_groups))
        if where is not None:
            index = table.schema_arrow.get_field_index(where[0])
            groups = [g for g in groups if _may_hold(table.metadata.row_group(g).column(index).statistics, where[1])]
        data = table.read_row_groups(groups, columns=columns) if groups else \
            table.schema_arrow.empty_table().select(columns or table.schema_arrow.names)
    except (pa.ArrowException, OSError) as exc:
        reject(path, f"it cannot be decoded ({exc})")
    return data


def read_columns(path: str | Path, columns: list[str] | None = None, *, where: tuple[str, object] | None = None
                 ) -> pd.DataFrame:
    """Some columns of a table, verified, as a DataFrame; where=(column, value): only its rows, read
    from the row groups whose statistics say they may hold that value."""
    data = _read_groups_where(path, columns, where).to_pandas()
    if where is not None and len(data):
        data = data[data[where[0]] == where[1]].reset_index(drop=True)
    return data


def read_rows(path: str | Path, columns: list[str] | None = None, *, where: tuple[str, object] | None = None
              ) -> list[tuple]:
    """read_columns' rows as namedtuples (rows_of), without pandas."""
    rows = rows_of(_read_groups_where(path, columns, where))
    if where is not None:
        rows = [row for row in rows if getattr(row, where[0]) == where[1]]
    return rows


# pyarrow imports pandas (0.2 s, in every job that reads a table) on the first Array.to_numpy, even
# one that copies nothing, and on the first pa.array: the readers here use neither.


def rows_of(table: pa.Table) -> list[tuple]:
    """An Arrow table's rows as namedtuples with the values DataFrame.itertuples gives, without
    pandas: numbers and strings as Python's, binary as bytes, a list column's values as a NumPy
    array (None where null)."""
    row = namedtuple("Row", table.column_names, rename=True)
    columns = [_arrays_of(column) if pa.types.is_list(field.type) else column.to_pylist()
               for field, column in zip(table.schema, table.columns)]
    return [row(*values) for values in zip(*columns)]


def _arrays_of(column: pa.ChunkedArray) -> list[np.ndarray | None]:
    """A list column as one NumPy array per row (slices of one copy of the values the chunk's rows
    use: a list column of the offline mesh's 936 landmarks a face converts 4 times as fast as
    to_pylist). A sliced chunk still holds its whole table's values: only its own are copied."""
    out: list[np.ndarray | None] = []
    offset_type = np.int64 if pa.types.is_large_list(column.type) else np.int32
    for chunk in column.chunks:
        offsets = _buffer_values(chunk, offset_type, extra=1)
        lo, hi = int(offsets[0]), int(offsets[-1])
        offsets = offsets - lo
        used = chunk.values.slice(lo, hi - lo)
        if used.null_count or not pa.types.is_floating(used.type) and not pa.types.is_integer(used.type):
            values = np.array([np.nan if v is None else v for v in used.to_pylist()])
        else:
            values = np.array(_buffer_values(used, used.type.to_pandas_dtype()))
        valid = [True] * len(chunk) if not chunk.null_count else chunk.is_valid().to_pylist()
        out.extend(values[offsets[i]:offsets[i + 1]] if valid[i] else None for i in range(len(chunk)))
    return out


def _buffer_values(array: pa.Array, dtype, extra: int = 0) -> np.ndarray:
    """A primitive array's values (a list array's offsets: extra=1), viewed in its data buffer."""
    return np.frombuffer(array.buffers()[1], dtype)[array.offset:array.offset + len(array) + extra]


def read_column(path: str | Path, column: str) -> list:
    """One column of a table as a list, verified (without pandas)."""
    table = open_table(path)
    try:
        return table.read(columns=[column]).column(column).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        reject(path, f"it cannot be decoded ({exc})")


def _may_hold(stats, value) -> bool:
    if stats is None or not stats.has_min_max:
        return True
    return stats.min <= value <= stats.max


def read_table(path: str | Path) -> pd.DataFrame:
    """A whole (small) table, verified."""
    table = open_table(path)
    try:
        return table.read().to_pandas()
    except (pa.ArrowException, OSError) as exc:
        reject(path, f"it cannot be decoded ({exc})")


def _whole_frames(path: str | Path, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """A table (sorted by frame) a row group at a time as Arrow tables, each holding only whole
    frames: a frame that continues into the next row group is held back and joined to it. The
    file is verified once, before the first row group. columns: only these (and "frame") are
    read (None: all)."""
    table = open_table(path)
    if columns is not None:
        columns = list(dict.fromkeys(["frame", *columns]))
    carry = None
    for i in range(table.num_row_groups):
        try:
            group = table.read_row_group(i, columns=columns)
        except (pa.ArrowException, OSError) as exc:
            reject(path, f"row group {i} cannot be decoded ({exc})")
        if carry is not None:
            group = pa.concat_tables([carry, group])
        if not group.num_rows:
            carry = None
            continue
        frames = group.column("frame").to_pylist()
        cut = bisect.bisect_left(frames, frames[-1])  # sorted: the last frame's first row
        carry = group.slice(cut)
        if cut:
            yield group.slice(0, cut)
    if carry is not None and carry.num_rows:
        yield carry


def iter_frame_rows(path: str | Path, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """_whole_frames as DataFrames. columns: only these (and "frame") are read (None: all); a
    faces table's others took more than half of the swap's reading."""
    for piece in _whole_frames(path, columns):
        yield piece.to_pandas()


def iter_frame_tuples(path: str | Path, columns: list[str] | None = None) -> Iterator[list[tuple]]:
    """_whole_frames as lists of namedtuples (rows_of), without pandas."""
    for piece in _whole_frames(path, columns):
        yield rows_of(piece)


def iter_frame_records(path: str | Path, columns: list[str] | None = None) -> Iterator[tuple[int, list[dict]]]:
    """(frame, its rows as dicts) of a table sorted by frame, frame by frame (_whole_frames),
    without pandas: for the stages that only walk the rows."""
    for piece in _whole_frames(path, columns):
        rows = piece.to_pylist()
        start = 0
        for end in range(1, len(rows) + 1):
            if end == len(rows) or rows[end]["frame"] != rows[start]["frame"]:
                yield rows[start]["frame"], rows[start:end]
                start = end
