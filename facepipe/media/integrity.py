"""Intermediates that prove they are intact when a later stage reads them.

Every file a stage hands on (face and patch tables, encoded segments, the segment plan, the
probe, the job's embedding records) is sealed when it is complete: a small sidecar
`<file>.sha256` holds its SHA-256 and size, written before the file is renamed into place
(place_sealed), so a finished file never shows without its seal. The stage that reads it
verifies the seal first, once per job. A file whose bytes changed after it was written (a
flipped bit, a truncated copy, an edit that kept the timestamp) is never used: it is removed,
with its seal, and reported with its path, so the next run remakes it (Snakemake sees the file
missing and reruns the stage that makes it). A file inside a directory output (the plan in
work/NAME/segments) takes the directory with it: only that makes Snakemake plan again.

A file without a seal counts as damaged too: it was not finished by this workflow, or was
made by a version that did not seal, and cannot be trusted either way. The one exception is
the embedding cache, shared across jobs and only a shortcut (facepipe.faces.embedding): a damaged or
unsealed entry there is recomputed with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import NoReturn

from facepipe.media.files import json_text

log = logging.getLogger(__name__)

SEAL_SUFFIX = ".sha256"


class DamagedIntermediateError(Exception):
    """An intermediate whose content does not match its seal; the message names the file."""


def digest_file(path: str | Path) -> str:
    """SHA-256 of a file's content, streamed so 500 MB models do not sit in memory: the one
    streaming digest the package has (facepipe.models.download's sha256_file is this one). Here, not
    there: every stage reads sealed files, and facepipe.models.download imports the model registry, which
    would make every stage's code version (facepipe.workflow.provenance) depend on it."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def seal_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + SEAL_SUFFIX)


def seal(path: str | Path, content: str | Path | None = None) -> str:
    """Record the finished file's digest and size beside it (written atomically).

    content: the file whose bytes to record, when that is not yet at `path` (a writer's
    temporary file, sealed before it is renamed into place: see place_sealed)."""
    path = Path(path)
    content = path if content is None else Path(content)
    digest = digest_file(content)
    sidecar = seal_path(path)
    # The process id keeps two jobs that seal the same file (a shared cache entry) from
    # renaming each other's temporary file away.
    tmp = sidecar.with_name(f"{sidecar.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{digest} {content.stat().st_size}\n")
    os.replace(tmp, sidecar)
    return digest


def place_sealed(tmp: str | Path, path: str | Path) -> Path:
    """Seal a finished temporary file for `path`, then rename it there: the file never
    appears under its name without its seal (a job killed in between leaves no file, or a
    file its seal rejects, and either way the stage runs again)."""
    path = Path(path)
    seal(path, content=tmp)
    os.replace(tmp, path)
    return path


def unseal(path: str | Path) -> None:
    """Remove a file's seal (when the file itself is removed)."""
    seal_path(path).unlink(missing_ok=True)


def _seal_record(path: Path) -> tuple[str, int] | str:
    """(digest, size) from a file's seal, or what is wrong with the seal."""
    sidecar = seal_path(path)
    try:
        want_digest, want_size = sidecar.read_text().split()
        return want_digest, int(want_size)
    except FileNotFoundError:
        return f"it has no seal ({sidecar.name}): it was not finished by this workflow"
    except (OSError, ValueError):
        return f"its seal {sidecar.name} is unreadable"


# Files this process verified, by path: (device, inode, size, mtime, ctime, digest) when verified.
# A stage that reads a table twice (the swap's occlusion pass, the render's copy plan) hashes it
# once. Only for files last changed at least a second before they were verified: a file system
# keeps its times in ticks (a few ms; a second on ext3, HFS+ and some NFS servers), and a change
# made within the tick of the one before would leave all of them as they were.
_VERIFIED: dict[str, tuple] = {}
_SETTLED_NS = 1_000_000_000


def check(path: str | Path) -> str | None:
    """What is wrong with a sealed file, or None when it is intact."""
    path = Path(path)
    if not path.is_file():
        return "it is missing"
    record = _seal_record(path)
    if isinstance(record, str):
        return record
    want_digest, want_size = record
    st = path.stat()
    if st.st_size != want_size:
        return f"its size is {st.st_size} bytes, {want_size} were written"
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, want_digest)
    name = os.path.abspath(path)
    if _VERIFIED.get(name) == key:
        return None
    if digest_file(path) != want_digest:
        return "its content changed after it was written (SHA-256 mismatch)"
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > _SETTLED_NS:
        _VERIFIED[name] = key
    return None


def check_bytes(path: str | Path, data: bytes) -> str | None:
    """check() of a file's content already read into memory (so what is verified is exactly
    what is used, even if the file changes after it was read)."""
    record = _seal_record(Path(path))
    if isinstance(record, str):
        return record
    want_digest, want_size = record
    if len(data) != want_size:
        return f"its size is {len(data)} bytes, {want_size} were written"
    if hashlib.sha256(data).hexdigest() != want_digest:
        return "its content changed after it was written (SHA-256 mismatch)"
    return None


def discard(path: str | Path) -> None:
    """Remove a file (or a directory output holding it) and its seal."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    unseal(path)


def reject(path: str | Path, problem: str, *, owner: str | Path | None = None) -> NoReturn:
    """Remove a damaged intermediate and raise DamagedIntermediateError naming it.

    owner: the stage's output that holds the file, removed instead of the file alone, when
    that is what makes Snakemake remake it (a file inside a directory output)."""
    path = Path(path)
    discard(path)
    if owner is not None and Path(owner) != path:
        discard(owner)
    removed = path if owner is None else Path(owner)
    raise DamagedIntermediateError(
        f"intermediate {str(path)!r} is damaged: {problem}. {str(removed)!r} was removed and will be "
        f"remade: run the same command again")


def verify(path: str | Path, *, owner: str | Path | None = None) -> Path:
    """Return path when the file is intact; otherwise remove it and its seal (or its owner,
    see reject) and raise DamagedIntermediateError naming it, so that the next run remakes it."""
    path = Path(path)
    problem = check(path)
    if problem is not None:
        reject(path, problem, owner=owner)
    return path


def read_verified(path: str | Path, *, owner: str | Path | None = None) -> bytes:
    """A small sealed file's bytes, read once and verified (reject when damaged)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        reject(path, "it is missing", owner=owner)
    except OSError as exc:
        reject(path, f"it cannot be read ({exc.strerror or exc})", owner=owner)
    problem = check_bytes(path, data)
    if problem is not None:
        reject(path, problem, owner=owner)
    return data


def write_sealed_json(path: str | Path, data: dict) -> Path:
    """JSON written atomically and sealed (the same text as facepipe.media.files.write_json)."""

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json_text(data))
    return place_sealed(tmp, path)


def read_sealed_json(path: str | Path, *, owner: str | Path | None = None) -> dict:
    """A sealed JSON file, verified; one whose seal matches but that is not a JSON object
    (written damaged) is rejected as well."""
    data = read_verified(path, owner=owner)
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        reject(path, f"it is not valid JSON ({exc})", owner=owner)
    if not isinstance(value, dict):
        reject(path, f"it holds a JSON {type(value).__name__}, not an object", owner=owner)
    return value
