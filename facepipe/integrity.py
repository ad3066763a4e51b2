"""Intermediates that prove they are intact when a later stage reads them.

Every file a stage hands on (face and patch tables, encoded segments, the segment plan, the
probe) is sealed when it is complete: a small sidecar `<file>.sha256` holds its SHA-256 and
size. The stage that reads it verifies the seal first. A file whose bytes changed after it was
written (a flipped bit, a truncated copy, an edit that kept the timestamp) is never used: it is
removed, with its seal, and reported with its path, so the next run remakes it (Snakemake
sees the file missing and reruns the stage that makes it).

A file without a seal counts as damaged too: it was not finished by this workflow, or was
made by a version that did not seal, and cannot be trusted either way.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

SEAL_SUFFIX = ".sha256"
_CHUNK = 1 << 20


class DamagedIntermediateError(Exception):
    """An intermediate whose content does not match its seal; the message names the file."""


def digest_file(path: str | Path) -> str:
    """SHA-256 of a file's content, read a MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def seal_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + SEAL_SUFFIX)


def seal(path: str | Path) -> str:
    """Record the finished file's digest and size beside it (written atomically)."""
    path = Path(path)
    digest = digest_file(path)
    sidecar = seal_path(path)
    tmp = sidecar.with_name(sidecar.name + ".tmp")
    tmp.write_text(f"{digest} {path.stat().st_size}\n")
    os.replace(tmp, sidecar)
    return digest


def unseal(path: str | Path) -> None:
    """Remove a file's seal (when the file itself is removed)."""
    seal_path(path).unlink(missing_ok=True)


def check(path: str | Path) -> str | None:
    """What is wrong with a sealed file, or None when it is intact."""
    path, sidecar = Path(path), seal_path(path)
    if not path.is_file():
        return "it is missing"
    try:
        want_digest, want_size = sidecar.read_text().split()
        want_size = int(want_size)
    except FileNotFoundError:
        return f"it has no seal ({sidecar.name}): it was not finished by this workflow"
    except (OSError, ValueError):
        return f"its seal {sidecar.name} is unreadable"
    size = path.stat().st_size
    if size != want_size:
        return f"its size is {size} bytes, {want_size} were written"
    if digest_file(path) != want_digest:
        return "its content changed after it was written (SHA-256 mismatch)"
    return None


def verify(path: str | Path) -> Path:
    """Return path when the file is intact; otherwise remove it and its seal and raise
    DamagedIntermediateError naming it, so that the next run remakes it."""
    path = Path(path)
    problem = check(path)
    if problem is None:
        return path
    if path.is_file():
        path.unlink(missing_ok=True)
    unseal(path)
    raise DamagedIntermediateError(
        f"intermediate {str(path)!r} is damaged: {problem}. It was removed and will be remade: "
        f"run the same command again")
