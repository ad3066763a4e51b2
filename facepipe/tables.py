"""The per-segment tables the stages hand on (faces, patches), written and read a few frames at a time.

A segment's crops and patches can run to hundreds of MB (30 s of a group photo with
faces=many), so no stage holds a whole table: rows are written in row groups of whole frames as
they are made, and read back one row group at a time. Files are zstd-compressed Parquet, written
under a temporary name, sealed (facepipe.integrity) and renamed when complete; a reader verifies
the seal once before the first row group, so a table changed after it was written is never used.
Every data page also carries a CRC-32 that the reader checks (a second line, and it costs nothing
measurable next to decompression).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from facepipe.integrity import place_sealed, reject, verify
from facepipe.media import AtomicWriter

_FLOATS = pa.list_(pa.float64())

FACES_SCHEMA = pa.schema([
    ("frame", pa.int64()), ("face", pa.int64()),
    ("x1", pa.float64()), ("y1", pa.float64()), ("x2", pa.float64()), ("y2", pa.float64()),
    ("score", pa.float64()), ("kps", _FLOATS), ("embedding", _FLOATS), ("landmarks", _FLOATS),
    ("crop", pa.binary()), ("crop_x", pa.int64()), ("crop_y", pa.int64()), ("crop_matrix", _FLOATS),
])

PATCHES_SCHEMA = pa.schema([
    ("frame", pa.int64()), ("face", pa.int64()), ("kind", pa.string()), ("x", pa.int64()), ("y", pa.int64()),
    ("matrix", _FLOATS), ("kps", _FLOATS), ("image", pa.binary()),
])


class TableWriter(AtomicWriter):
    """Rows to a Parquet file in row groups; add a frame's rows together so a group never
    splits a frame. The file appears under its name only when closed without an error."""

    def __init__(self, path: str | Path, schema: pa.Schema, rows_per_group: int = 256):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.schema, self.rows_per_group = schema, rows_per_group
        self._writer = pq.ParquetWriter(self.tmp, schema, compression="zstd", write_page_checksum=True)
        self._rows: list[dict] = []
        self.rows = 0

    def add(self, rows: Iterable[dict]) -> None:
        self._rows.extend(rows)
        if len(self._rows) >= self.rows_per_group:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._writer.write_table(pa.Table.from_pylist(self._rows, schema=self.schema))
            self.rows += len(self._rows)
            self._rows = []

    def close(self) -> None:
        self._flush()
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
    """A sealed table, verified (facepipe.integrity.verify: a damaged one is removed and
    reported), opened with its page checksums checked as it is read."""
    verify(path)
    try:
        return pq.ParquetFile(path, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as exc:
        reject(path, f"it is not a readable Parquet table ({exc})")


def read_table(path: str | Path) -> pd.DataFrame:
    """A whole (small) table, verified."""
    table = open_table(path)
    try:
        return table.read().to_pandas()
    except (pa.ArrowException, OSError) as exc:
        reject(path, f"it cannot be decoded ({exc})")


def iter_frame_rows(path: str | Path) -> Iterator[pd.DataFrame]:
    """A table (sorted by frame) a row group at a time, each piece holding only whole frames:
    a frame that continues into the next row group is held back and joined to it. The file
    is verified once, before the first row group."""
    table = open_table(path)
    carry = None
    for i in range(table.num_row_groups):
        try:
            group = table.read_row_group(i).to_pandas()
        except (pa.ArrowException, OSError) as exc:
            reject(path, f"row group {i} cannot be decoded ({exc})")
        if carry is not None:
            group = pd.concat([carry, group], ignore_index=True)
        if group.empty:
            carry = None
            continue
        last = group["frame"].iloc[-1]
        carry = group[group["frame"] == last]
        done = group[group["frame"] != last]
        if len(done):
            yield done
    if carry is not None and len(carry):
        yield carry
