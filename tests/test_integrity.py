"""Sealed intermediates (facepipe.media.integrity): a file changed after it was written is never used.

The damage is the one reported: bytes flipped in the middle of a file whose timestamp was kept,
so nothing but the content tells it apart from the file that was written.
"""

import json
import logging
import os

import numpy as np
import pytest

from facepipe.media import integrity
from facepipe.media.integrity import DamagedIntermediateError
from facepipe.media.patches import Patch, encode_image


def flip_bytes(path, count=64, at=None):
    """Invert `count` bytes in the middle of a file (or at offset `at`), keeping its mtime."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    start = len(data) // 2 - count // 2 if at is None else at
    data[start:start + count] = bytes(b ^ 0xFF for b in data[start:start + count])
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns


def _gone(path):
    return not path.exists() and not integrity.seal_path(path).exists()


# --- seal, verify, unseal ------------------------------------------------------------------------

@pytest.fixture
def sealed(tmp_path):
    path = tmp_path / "table.bin"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    integrity.seal(path)
    return path


def test_an_intact_file_verifies_and_its_seal_holds_digest_and_size(sealed):
    digest, size = integrity.seal_path(sealed).read_text().split()
    assert digest == integrity.digest_file(sealed) and int(size) == 4096
    assert integrity.verify(sealed) == sealed
    assert integrity.check(sealed) is None


def test_a_settled_file_is_hashed_once_per_process_until_it_changes(sealed, monkeypatch):
    import time

    hashed = []
    real = integrity.digest_file
    monkeypatch.setattr(integrity, "digest_file", lambda p: hashed.append(p) or real(p))
    monkeypatch.setattr(integrity, "_VERIFIED", {})
    assert integrity.check(sealed) is None and integrity.check(sealed) is None
    assert len(hashed) == 2  # just written: within the file system clock's tick, always hashed
    monkeypatch.setattr(integrity, "_SETTLED_NS", -10**12)  # as though written long ago
    assert integrity.check(sealed) is None and integrity.check(sealed) is None
    assert len(hashed) == 3
    time.sleep(0.05)  # the next tick of the file system's clock
    flip_bytes(sealed)  # the same size and mtime: its ctime tells
    with pytest.raises(DamagedIntermediateError):
        integrity.verify(sealed)
    assert len(hashed) == 4


def test_a_flipped_byte_is_found_and_the_file_removed(sealed):
    flip_bytes(sealed, count=1)
    with pytest.raises(DamagedIntermediateError, match="SHA-256") as err:
        integrity.verify(sealed)
    assert repr(str(sealed)) in str(err.value) and "run the same command again" in str(err.value)
    assert _gone(sealed)


def test_a_truncated_file_is_found(sealed):
    sealed.write_bytes(sealed.read_bytes()[:1000])
    with pytest.raises(DamagedIntermediateError, match="1000 bytes, 4096 were written"):
        integrity.verify(sealed)
    assert _gone(sealed)


def test_a_file_without_its_seal_is_not_trusted(sealed):
    integrity.unseal(sealed)
    assert not integrity.seal_path(sealed).exists() and sealed.exists()
    with pytest.raises(DamagedIntermediateError, match="no seal"):
        integrity.verify(sealed)
    assert not sealed.exists()


def test_an_unreadable_seal_is_not_trusted(sealed):
    integrity.seal_path(sealed).write_text("garbage\n")
    with pytest.raises(DamagedIntermediateError, match="unreadable"):
        integrity.verify(sealed)


def test_place_sealed_never_shows_a_file_without_its_seal(tmp_path):
    tmp, final = tmp_path / "x.tmp", tmp_path / "x.json"
    tmp.write_text("{}")
    integrity.place_sealed(tmp, final)
    assert not tmp.exists() and integrity.verify(final) == final


def test_sealed_json_round_trip_and_damage(tmp_path):
    path = integrity.write_sealed_json(tmp_path / "probe.json", {"frames": 50, "fps": "25/1"})
    assert integrity.read_sealed_json(path) == {"frames": 50, "fps": "25/1"}
    path.write_text(path.read_text().replace("50", "51"))  # same size, other content
    with pytest.raises(DamagedIntermediateError, match="probe.json"):
        integrity.read_sealed_json(path)
    assert _gone(path)


def test_a_damaged_plan_takes_its_folder_with_it(tmp_path):
    """The manifest lives in the checkpoint's folder output: only removing the folder makes
    Snakemake plan again."""
    folder = tmp_path / "segments"
    folder.mkdir()
    manifest = integrity.write_sealed_json(folder / "manifest.json", {"segments": {"seg_0000": 25}})
    assert integrity.read_sealed_json(manifest, owner=folder)["segments"] == {"seg_0000": 25}
    flip_bytes(manifest, count=4)
    with pytest.raises(DamagedIntermediateError, match="manifest.json") as err:
        integrity.read_sealed_json(manifest, owner=folder)
    assert repr(str(folder)) in str(err.value)
    assert not folder.exists()


def test_sealed_json_that_is_not_json_is_rejected(tmp_path):
    path = tmp_path / "m.json"
    path.write_text("[1, 2")
    integrity.seal(path)
    with pytest.raises(DamagedIntermediateError, match="not valid JSON"):
        integrity.read_sealed_json(path)
    assert _gone(path)


# --- the tables ----------------------------------------------------------------------------------

FRAMES = 50


KPS = [38.3, 51.7, 73.5, 51.5, 56.0, 71.7, 41.5, 92.4, 70.7, 92.2]


def face_table_rows(crop_size=144, seed=0):
    """A faces table as detection writes it for the learned swapper: one face per frame, its
    aligned crop with detection's margin (noise: it compresses no better than a real face) and
    matrix."""
    from insightface.utils import face_align

    rng = np.random.default_rng(seed)
    matrix = face_align.estimate_norm(np.reshape(KPS, (5, 2)), 128)
    matrix[:, 2] += 8
    for frame in range(1, FRAMES + 1):
        yield [{"frame": frame, "face": 0, "x1": 10.0, "y1": 10.0, "x2": 110.0, "y2": 110.0, "score": 0.9,
                "kps": KPS, "embedding": None, "landmarks": None, "hold": False, "held_from": 0,
                "crop": encode_image(rng.integers(0, 256, (crop_size, crop_size, 3), np.uint8)),
                "crop_x": 0, "crop_y": 0, "crop_matrix": matrix.reshape(-1).tolist()}]


def tracked_faces():
    """The tracker's rows for face_table_rows: one person, every frame."""
    import pandas as pd

    return pd.DataFrame([{"frame": f, "seg_frame": f, "face": 0, "filled": False, "track": 1, "person": 1,
                          "kps": KPS, "landmarks": None, "source": "source"} for f in range(1, FRAMES + 1)])


def swap(faces, swapper, out):
    from facepipe.swap.segment import swap_segment

    return swap_segment(faces, tracked_faces(), {"source": (swapper, np.ones(512, np.float32))}, out,
                        crop_kind="aligned:arcface_128:128")


def patch_frames(size=128, seed=1):
    rng = np.random.default_rng(seed)
    for frame in range(1, FRAMES + 1):
        yield [Patch("eroded_crop", rng.integers(0, 256, (size, size, 3), np.uint8), matrix=np.eye(2, 3),
                     frame=frame, face=0, kps=np.zeros((5, 2), np.float32))]


class NoSwap:
    """A swapper that must not be reached."""

    batch_size = 4

    def swap(self, crops, args, source):
        raise AssertionError("a damaged faces table reached the swapper")


class CopySwap:
    batch_size = 4

    def swap(self, crops, args, source):
        return [Patch("eroded_crop", c, matrix=np.asarray(a["matrix"]).reshape(2, 3)) for c, a in zip(crops, args)]


def test_faces_table_with_flipped_bytes_is_refused_by_each_reader(tmp_path):
    from facepipe.faces.detection import read_faces, write_faces

    faces = tmp_path / "faces" / "seg_0001.parquet"
    write_faces(face_table_rows(), faces)
    assert integrity.check(faces) is None
    assert len(read_faces(faces)) == FRAMES
    # The swap reads it a row group at a time; an intact one swaps every face.
    assert swap(faces, CopySwap(), tmp_path / "ok.parquet") == FRAMES

    flip_bytes(faces)
    out = tmp_path / "swapped.parquet"
    with pytest.raises(DamagedIntermediateError) as err:
        swap(faces, NoSwap(), out)
    assert repr(str(faces)) in str(err.value)
    assert _gone(faces) and not out.exists() and not list(tmp_path.glob("swapped*"))

    write_faces(face_table_rows(), faces)
    flip_bytes(faces)
    with pytest.raises(DamagedIntermediateError, match="seg_0001.parquet"):
        read_faces(faces)
    assert _gone(faces)


def test_patch_table_with_flipped_bytes_is_refused_by_each_reader(tmp_path):
    from facepipe.media.patches import FramePatches, read_patches, write_patches

    table = tmp_path / "swapped" / "seg_0001.parquet"
    for reader in (read_patches, FramePatches):
        assert write_patches(patch_frames(), table) == FRAMES
        flip_bytes(table)
        with pytest.raises(DamagedIntermediateError) as err:
            reader(table)
        assert repr(str(table)) in str(err.value)
        assert _gone(table)


def test_enhancer_pass_through_verifies_the_swap_and_seals_its_copy(tmp_path):
    from facepipe.swap.enhance import pass_through_segment
    from facepipe.media.patches import read_patches, write_patches

    swapped, enhanced = tmp_path / "swapped.parquet", tmp_path / "enhanced.parquet"
    write_patches(patch_frames(), swapped)
    pass_through_segment(swapped, enhanced)
    assert len(read_patches(enhanced)) == FRAMES
    flip_bytes(swapped)
    with pytest.raises(DamagedIntermediateError, match="swapped.parquet"):
        pass_through_segment(swapped, tmp_path / "again.parquet")
    assert not (tmp_path / "again.parquet").exists()


def test_verification_reads_each_table_once_not_per_row_group(tmp_path, monkeypatch):
    from facepipe.media.patches import read_patches, write_patches
    from facepipe.media.tables import PATCHES_SCHEMA, TableWriter

    table = tmp_path / "p.parquet"
    write_patches(patch_frames(), table)
    assert __import__("pyarrow.parquet").parquet.ParquetFile(table).num_row_groups == 1
    with TableWriter(table, PATCHES_SCHEMA, rows_per_group=4) as writer:  # many row groups
        from facepipe.media.patches import patch_row
        for frame in patch_frames():
            writer.add([patch_row(p) for p in frame])
    digests = []
    real = integrity.digest_file
    monkeypatch.setattr(integrity, "digest_file", lambda p: digests.append(p) or real(p))
    assert len(read_patches(table)) == FRAMES
    assert digests == [table]


def test_page_checksums_catch_damage_behind_a_matching_seal(tmp_path):
    """The second line: a page changed before it was sealed (say, in memory) still fails its CRC."""
    from facepipe.media.patches import read_patches, write_patches

    table = tmp_path / "p.parquet"
    write_patches(patch_frames(), table)
    flip_bytes(table)
    integrity.seal(table)  # the seal now agrees with the damage
    with pytest.raises(DamagedIntermediateError, match="p.parquet.*cannot be decoded"):
        read_patches(table)
    assert _gone(table)


# --- tables that decode to garbage (sealed as written) ------------------------------------------

def test_a_crop_of_the_wrong_size_is_an_error_naming_the_table(tmp_path):
    from facepipe.faces.detection import write_faces

    faces = tmp_path / "faces.parquet"
    write_faces(face_table_rows(crop_size=96), faces)
    with pytest.raises(DamagedIntermediateError, match=r"faces.parquet.*96x96, not a square of 128 px"):
        swap(faces, NoSwap(), tmp_path / "out.parquet")
    assert _gone(faces)


def test_crop_bytes_that_are_no_image_are_an_error_naming_the_table(tmp_path):
    from facepipe.faces.detection import write_faces

    def rows():
        for frame_rows in face_table_rows():
            yield [{**row, "crop": row["crop"][:-100]} for row in frame_rows]  # cut short

    faces = tmp_path / "faces.parquet"
    write_faces(rows(), faces)
    with pytest.raises(DamagedIntermediateError, match=r"faces.parquet.*do not decode"):
        swap(faces, NoSwap(), tmp_path / "out.parquet")


@pytest.mark.parametrize("bad", ["size", "matrix", "bytes"])
def test_a_patch_that_is_not_what_a_stage_makes_is_an_error_naming_the_table(tmp_path, bad):
    from facepipe.media.patches import patch_row, read_patches
    from facepipe.media.tables import PATCHES_SCHEMA, write_table

    def rows():
        for frame in patch_frames(size=32 if bad == "size" else 128):
            row = patch_row(frame[0])
            if bad == "matrix":
                row["matrix"] = [0.0] * 6
            if bad == "bytes":
                row["image"] = row["image"][:200]
            yield [row]

    table = tmp_path / "swapped.parquet"
    write_table(rows(), table, PATCHES_SCHEMA)
    want = {"size": "32x32, not a square of 64 px or more", "matrix": "not invertible", "bytes": "do not decode"}[bad]
    with pytest.raises(DamagedIntermediateError, match=f"swapped.parquet.*{want}"):
        read_patches(table)
    assert _gone(table)


# --- embeddings ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def standin_models(tmp_path_factory):
    from facepipe.models.standin import build_standin

    d = tmp_path_factory.mktemp("models") / "standin"
    d.mkdir()
    return {k: build_standin(k, d / f"{k}.onnx") for k in ("det_10g", "w600k_r50")}


@pytest.fixture
def embed(standin_models, tmp_path):
    from facepipe.media import demo
    from facepipe.faces.embedding import cache_path, embed_image

    image = demo.write_astronaut(tmp_path / "astronaut.png")
    det, rec = standin_models["det_10g"], standin_models["w600k_r50"]
    cache = tmp_path / "cache"

    def run(out):
        return embed_image(image, det, rec, tmp_path / out, providers=["cpu"], cache_dir=cache)

    run.entry = cache_path(cache, image, det, rec, -1)
    return run


def test_a_damaged_cache_entry_is_recomputed_with_a_warning(embed, tmp_path, caplog):
    from facepipe.faces.embedding import load_source

    first = embed("a.npz")
    assert integrity.check(embed.entry) is None and integrity.check(tmp_path / "a.npz") is None
    flip_bytes(embed.entry)
    with caplog.at_level(logging.INFO, logger="facepipe.faces.embedding"):
        again = embed("b.npz")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(embed.entry) in w and "recomputing" in w for w in warnings), warnings
    assert "cache miss" in caplog.text
    assert np.array_equal(again["embedding"], first["embedding"])
    assert np.array_equal(load_source(tmp_path / "b.npz")["embedding"], first["embedding"])
    assert integrity.check(embed.entry) is None  # rewritten and sealed


def test_a_truncated_cache_entry_is_recomputed(embed, caplog):
    first = embed("a.npz")
    embed.entry.write_bytes(embed.entry.read_bytes()[:50])
    with caplog.at_level(logging.WARNING, logger="facepipe.faces.embedding"):
        again = embed("b.npz")
    assert str(embed.entry) in caplog.text
    assert np.array_equal(again["embedding"], first["embedding"])


def test_an_unsealed_cache_entry_is_recomputed_with_a_warning(embed, caplog):
    """The cache is per code version (scripts/embed_face.py), so no entry without a seal was made by
    this code: it is not trusted, however well it loads."""
    first = embed("a.npz")
    integrity.unseal(embed.entry)
    with caplog.at_level(logging.INFO, logger="facepipe.faces.embedding"):
        again = embed("b.npz")
    assert "cache miss" in caplog.text and str(embed.entry) in caplog.text and "recomputing" in caplog.text
    assert np.array_equal(again["embedding"], first["embedding"])
    assert integrity.check(embed.entry) is None


def test_an_unsealed_damaged_cache_entry_is_recomputed(embed, caplog):
    first = embed("a.npz")
    integrity.unseal(embed.entry)
    flip_bytes(embed.entry)  # in the embedding's bytes: the archive's CRC-32 no longer matches
    with caplog.at_level(logging.INFO, logger="facepipe.faces.embedding"):
        again = embed("b.npz")
    assert "recomputing" in caplog.text and "cache miss" in caplog.text
    assert np.array_equal(again["embedding"], first["embedding"])
    assert integrity.check(embed.entry) is None


def test_a_damaged_job_embedding_is_refused_and_removed(embed, tmp_path):
    from facepipe.faces.embedding import load_embedding, load_source

    embed("source_embedding.npz")
    path = tmp_path / "source_embedding.npz"
    assert load_embedding(path).shape == (512,)
    flip_bytes(path)
    with pytest.raises(DamagedIntermediateError, match="source_embedding.npz"):
        load_source(path)
    assert _gone(path)


def test_probe_and_plan_written_by_the_scripts_are_sealed(tmp_path):
    """What the scripts write is what they read: the JSON text facepipe.media.files writes, sealed."""
    from facepipe.media.files import write_json

    plain, sealed = tmp_path / "plain.json", tmp_path / "sealed.json"
    write_json(plain, {"b": 1, "a": [1, 2]})
    integrity.write_sealed_json(sealed, {"b": 1, "a": [1, 2]})
    assert plain.read_text() == sealed.read_text()
    assert json.loads(sealed.read_text()) == integrity.read_sealed_json(sealed)


def test_table_rows_are_written_as_pyarrow_reads_them_from_python():
    import pyarrow as pa

    from facepipe.media.tables import FACES_SCHEMA, table_of_rows

    rng = np.random.default_rng(0)
    rows = []
    for i in range(7):
        rows.append({"frame": i + 1, "face": 0, "x1": 1.5, "y1": 2.0, "x2": 30.0, "y2": 40.25, "score": 0.9,
                     # list columns as NumPy arrays of another dtype, as Python lists, and null
                     "kps": rng.random(10).astype(np.float32), "embedding": None if i % 3 else list(rng.random(4)),
                     "landmarks": rng.random(6) if i % 2 else None, "hold": bool(i % 2), "held_from": i,
                     "crop": bytes([i]) * i, "crop_x": 2 * i, "crop_y": i, "crop_matrix": [] if i == 4 else None})
    assert table_of_rows(rows, FACES_SCHEMA).equals(pa.Table.from_pylist(rows, schema=FACES_SCHEMA))
    assert table_of_rows([], FACES_SCHEMA).equals(pa.Table.from_pylist([], schema=FACES_SCHEMA))
