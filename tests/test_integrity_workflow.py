"""Damaged intermediates, end to end: never a wrong result with exit 0.

Each test damages one intermediate of a finished job the way the report did (64 bytes flipped in
the middle, the timestamp kept, so Snakemake sees nothing), makes the stage that reads it run
again, and checks that the run either stops with one line naming the file or (the embedding
cache, which is only a shortcut) warns and gives the right result; and that the next run gives
exactly the frames of a clean run.
"""

import re
import shutil

import av
import numpy as np
import pytest
from tests.workflow_helpers import copy_workflow
from tests.test_integrity import flip_bytes
from tests.workflow_helpers import pin_backend, snakemake, write_sheet

from facepipe.media import integrity

pytestmark = pytest.mark.workflow

JOB = {"name": "clip", "target": "inputs/clip.mp4", "source": "inputs/astronaut.png", "segment_seconds": 1}


def decoded_frames(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]


def same_frames(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, media_dir):
    """A finished run of the default sheet's kind of job: a 2 s clip in two 1 s segments,
    and the frames of its result."""
    wd = copy_workflow(tmp_path_factory.mktemp("integrity"))
    pin_backend(wd, "standin")
    (wd / "inputs").mkdir()
    shutil.copy(media_dir / "clip.mp4", wd / "inputs" / "clip.mp4")
    shutil.copy(media_dir / "astronaut.png", wd / "inputs" / "astronaut.png")
    write_sheet(wd / "config" / "jobs.tsv", [JOB])
    snakemake(wd)
    clean = decoded_frames(wd / "results" / "clip.mp4")
    assert len(clean) == 50
    return wd, clean


def assert_refused(proc, rel_path: str, log: str):
    """A non-zero exit with the line that names the damaged file, on the console and in the
    rule's log. Snakemake prints a failed job's log, and a GPU rule's retry (retries: 3) then
    starts its log afresh, so the log is checked as Snakemake printed it."""
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"a damaged {rel_path} gave exit 0:\n{out[-3000:]}"
    line = rf"intermediate '{re.escape(rel_path)}' is damaged: .*SHA-256"
    assert re.search(rf"ERROR in rule .*{line}", out), out[-4000:]
    logged = out[out.index(f"Logfile {log}:"):] if f"Logfile {log}:" in out else ""
    assert re.search(rf"ERROR facepipe.rule: {line}", logged), out[-4000:]


@pytest.mark.parametrize("stage, consumer", [("faces", "swap_faces"), ("swapped", "render_segment")])
def test_a_damaged_table_stops_its_reader_and_the_next_run_remakes_it(workspace, stage, consumer):
    wd, clean = workspace
    rel = f"work/clip/{stage}/seg_0001.parquet"
    table = wd / rel
    assert integrity.check(table) is None
    flip_bytes(table)
    # Make the reader run again: the result goes (the encoded segments went after the mux), and
    # for the faces table so does the swap's output that was made from it.
    (wd / "results" / "clip.mp4").unlink()
    if stage == "faces":
        (wd / "work/clip/swapped/seg_0001.parquet").unlink()
    proc = snakemake(wd, check=False)
    assert_refused(proc, rel, f"logs/clip/{consumer}/seg_0001.log")
    assert not (wd / "results" / "clip.mp4").exists()
    assert not table.exists()  # removed, so that the next run remakes it
    snakemake(wd)
    assert integrity.check(table) is None
    assert same_frames(decoded_frames(wd / "results" / "clip.mp4"), clean)


def test_a_damaged_embedding_cache_entry_is_recomputed_with_a_warning(workspace):
    wd, clean = workspace
    (entry,) = (wd / "resources" / "embeddings").rglob("*.npz")
    assert integrity.check(entry) is None
    flip_bytes(entry)
    # A second job with the same source photo (its own sheet, so the first job is left alone).
    sheet = write_sheet(wd / "config" / "again.tsv", [{**JOB, "name": "again"}])
    proc = snakemake(wd, "--config", f"jobs={sheet.relative_to(wd)}", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    rel = str(entry.relative_to(wd))
    # Found by the source photo's check while the run plans (facepipe.workflow.preflight), which
    # recomputes the entry there; the embed_face job then reads the recomputed one.
    assert re.search(rf"WARNING .*embedding cache entry {re.escape(rel)} is damaged .*recomputing", out), out[-4000:]
    assert "cache hit" in (wd / "logs/again/embed_face_source.log").read_text()
    assert integrity.check(entry) is None  # recomputed and sealed
    assert same_frames(decoded_frames(wd / "results" / "again.mp4"), clean)
