"""The per-segment tables the stages hand on (faces, patches), written and read a few frames at a time.

A segment's crops and patches can run to hundreds of MB (30 s of a group photo with
faces=many), so no stage holds a whole table: rows are written in row groups of whole frames as
they are made, and read back one row group at a time. Files are zstd-compressed Parquet, written
under a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

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
        self._writer = pq.ParquetWriter(self.tmp, schema, compression="zstd")
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
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._writer.close()
        self.tmp.unlink(missing_ok=True)



def write_table(rows: Iterable[list[dict]], path: str | Path, schema: pa.Schema) -> int:
    """Write rows given frame by frame (one list per frame); returns the number of rows."""
    with TableWriter(path, schema) as writer:
        for frame_rows in rows:
            writer.add(frame_rows)
    return writer.rows


def iter_frame_rows(path: str | Path) -> Iterator[pd.DataFrame]:
    """A table (sorted by frame) a row group at a time, each piece holding only whole frames:
    a frame that continues into the next row group is held back and joined to it."""
    table = pq.ParquetFile(path)
    carry = None
    for i in range(table.num_row_groups):
        group = table.read_row_group(i).to_pandas()
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
