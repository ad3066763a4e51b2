"""A model reaches its final path only if its bytes are the pinned ones."""

import hashlib
import logging
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from facepipe.models.download import (
    ChecksumError,
    ModelUnavailableError,
    fetch,
    fetch_all_missing_message,
    sha256_file,
    verify,
)
from facepipe.models import MODELS, ModelSpec

PAYLOAD = b"not really an onnx model\n" * 5000


def _spec(url: str, sha: str, **kw) -> ModelSpec:
    return ModelSpec(key="toy", role="swapper", filename="toy.onnx", url=url, sha256=sha, licence="test", **kw)


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


@pytest.fixture
def good(tmp_path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    p = src / "toy.onnx"
    p.write_bytes(PAYLOAD)
    return p


def test_sha256_file_matches_hashlib(good):
    assert sha256_file(good) == hashlib.sha256(PAYLOAD).hexdigest()


def test_verify_rejects_a_flipped_byte(good):
    expected = sha256_file(good)
    verify(good, expected)
    data = bytearray(good.read_bytes())
    data[1234] ^= 0x01
    good.write_bytes(bytes(data))
    with pytest.raises(ChecksumError) as err:
        verify(good, expected)
    msg = str(err.value)
    assert str(good) in msg and expected in msg and sha256_file(good) in msg


def test_fetch_installs_a_good_file(good, tmp_path, caplog):
    dest = tmp_path / "models" / "toy.onnx"
    spec = _spec(good.as_uri(), hashlib.sha256(PAYLOAD).hexdigest())
    with caplog.at_level(logging.INFO, logger="facepipe.models.download"):
        assert fetch(spec, dest, retries=1) == dest
    assert dest.read_bytes() == PAYLOAD
    assert _leftovers(dest.parent) == ["toy.onnx"]
    assert any("%" in r.getMessage() for r in caplog.records)  # progress was reported
    # Second call: already present and verified, the source is not needed.
    good.unlink()
    assert fetch(spec, dest, retries=1) == dest


def test_fetch_rejects_a_corrupt_download(good, tmp_path):
    expected = hashlib.sha256(PAYLOAD).hexdigest()
    good.write_bytes(PAYLOAD[:-1] + b"X")
    dest = tmp_path / "models" / "toy.onnx"
    with pytest.raises(ChecksumError):
        fetch(_spec(good.as_uri(), expected), dest, retries=1)
    assert not dest.exists()
    assert _leftovers(dest.parent) == []  # no .part either


def test_corrupt_local_file_is_moved_aside_and_replaced(good, tmp_path):
    dest = tmp_path / "models" / "toy.onnx"
    dest.parent.mkdir()
    dest.write_bytes(b"truncated")
    fetch(_spec(good.as_uri(), hashlib.sha256(PAYLOAD).hexdigest()), dest, retries=1)
    assert dest.read_bytes() == PAYLOAD
    assert (dest.parent / "toy.onnx.corrupt").read_bytes() == b"truncated"


def test_unreachable_url_names_file_and_target(tmp_path):
    dest = tmp_path / "models" / "toy.onnx"
    sha = "ab" * 32
    with pytest.raises(ModelUnavailableError) as err:
        fetch(_spec("http://127.0.0.1:9/toy.onnx", sha), dest, retries=2, timeout=2, backoff=0.01)
    msg = str(err.value)
    assert "toy.onnx" in msg and "http://127.0.0.1:9/toy.onnx" in msg and sha in msg
    assert str(dest.resolve()) in msg
    assert not dest.exists() and _leftovers(dest.parent) == []


def test_zip_member_is_extracted_and_verified(good, tmp_path):
    archive = tmp_path / "src" / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("bundle/other.onnx", b"other")
        zf.write(good, "bundle/toy.onnx")
    url = archive.as_uri()
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    dest = tmp_path / "models" / "toy.onnx"
    fetch(_spec(url, sha, archive=url, archive_member="bundle/toy.onnx"), dest, retries=1)
    assert dest.read_bytes() == PAYLOAD
    assert _leftovers(dest.parent) == ["toy.onnx"]  # zip .part removed

    # A wrong member hash: nothing installed, nothing left behind.
    dest2 = tmp_path / "models2" / "toy.onnx"
    with pytest.raises(ChecksumError):
        fetch(_spec(url, "cd" * 32, archive=url, archive_member="toy.onnx"), dest2, retries=1)
    assert _leftovers(dest2.parent) == []


def test_unpinned_model_is_never_downloaded_but_hand_placed_copy_is_used(good, tmp_path, caplog):
    spec = _spec(good.as_uri(), "")
    dest = tmp_path / "models" / "toy.onnx"
    with pytest.raises(ModelUnavailableError, match="no pinned SHA-256"):
        fetch(spec, dest, retries=1)
    assert not dest.exists()
    dest.write_bytes(PAYLOAD)
    with caplog.at_level(logging.WARNING, logger="facepipe.models.download"):
        assert fetch(spec, dest) == dest
    assert hashlib.sha256(PAYLOAD).hexdigest() in caplog.text


def test_missing_message_lists_each_missing_file(tmp_path):
    specs = [MODELS["det_10g"], MODELS["inswapper_128"], MODELS["gfpgan_1.4"]]
    (tmp_path / "gfpgan_1.4.onnx").write_bytes(b"present")
    msg = fetch_all_missing_message(specs, tmp_path)
    for spec in specs[:2]:
        assert spec.filename in msg and spec.sha256 in msg
        assert str((tmp_path / spec.filename).resolve()) in msg
    assert "gfpgan_1.4.onnx (" not in msg
    assert "det_10g.onnx'" in msg  # zip member named
    assert fetch_all_missing_message([MODELS["gfpgan_1.4"]], tmp_path) == ""


def test_real_specs_use_their_own_filename(tmp_path):
    # replace() keeps the dataclass frozen semantics usable in callers.
    spec = replace(MODELS["gfpgan_1.4"], url="http://127.0.0.1:9/x")
    with pytest.raises(ModelUnavailableError, match="gfpgan_1.4.onnx"):
        fetch(spec, tmp_path / "gfpgan_1.4.onnx", retries=1, timeout=2, backoff=0)


def test_a_corrupt_real_model_on_disk_is_refused_before_use(tmp_path):
    """A file sitting where a real model belongs is hashed before any session is built."""
    from facepipe.models.download import verify_before_use
    from facepipe.models.runtime import create_session

    bad = tmp_path / "det_10g.onnx"
    bad.write_bytes(b"not the pinned detector")
    with pytest.raises(ChecksumError, match="refusing to use model .*det_10g.onnx"):
        create_session(bad, ["cpu"])
    with pytest.raises(ChecksumError):
        verify_before_use(bad)  # no stamp was written for the bad file
    assert not (tmp_path / ".det_10g.onnx.verified").exists()
