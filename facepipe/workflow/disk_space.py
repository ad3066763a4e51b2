"""Disk space for a rule script: a full disk told with the path, the space the stage needs (an
estimate) and the space free, and the temporaries a failed job left removed (facepipe.workflow.rule_script
calls these when a job fails).
"""

from __future__ import annotations

import errno
import glob
import os
import shutil
import statistics
from pathlib import Path

from facepipe.gpu import exception_chain

_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXT = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))  # as ffmpeg and Arrow say it


def disk_full_error(exc: BaseException) -> BaseException | None:
    """The exception in exc's chain that says the disk (or the quota) is full, or None."""

    for e in exception_chain(exc):
        if isinstance(e, OSError) and e.errno in _DISK_FULL_ERRNOS:
            return e
        if any(t in str(e) for t in _DISK_FULL_TEXT):
            return e
    return None


def _existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: str | Path) -> int | None:
    """Free space for this user on the file system that holds (or would hold) path."""
    try:
        return shutil.disk_usage(_existing(Path(path))).free
    except OSError:
        return None


def _mount_point(path: Path) -> Path:
    path = _existing(path)
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def _size(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def megabytes(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f} MB"


def _is_temporary(name: str) -> bool:
    return ".tmp" in name or ".partial" in name


def space_estimate(outputs: list[str | Path], inputs: list[str | Path]) -> tuple[int, str] | None:
    """(bytes, basis) this stage writes, estimated from what is on disk; None when nothing tells.

    The same stage's finished outputs beside this one (its other segments, other jobs) are the best
    guide: the median size of each output's finished siblings of the same kind, summed. Without
    them, the size of its inputs from work/ (the intermediate it turns into the next one).
    """
    total, found = 0, False
    for out in map(Path, outputs):
        if not out.suffix or not out.parent.is_dir():
            continue
        sizes = [f.stat().st_size for f in out.parent.glob("*" + glob.escape(out.suffix))
                 if f.is_file() and f.name != out.name and not _is_temporary(f.name)]
        if sizes:
            total += int(statistics.median(sizes))
            found = True
    if found:
        return total, "the median size of the same stage's finished outputs beside it"
    work = [Path(p) for p in inputs if Path(p).parts[:1] == ("work",) and Path(p).exists()]
    if work:
        return sum(_size(p) for p in work), "the size of its inputs under work/"
    return None


def disk_full_message(exc: BaseException, outputs: list[str | Path], inputs: list[str | Path],
                      free_at_start: int | None) -> str:
    """One line: which path, how much the stage needs (estimated), how much is free there."""
    named = getattr(exc, "filename", None)
    path = Path(named) if isinstance(named, (str, os.PathLike)) else (Path(outputs[0]) if outputs else Path("."))
    what = "disk quota exceeded" if getattr(exc, "errno", None) == errno.EDQUOT or \
        os.strerror(errno.EDQUOT) in str(exc) else "no space left on device"
    estimate = space_estimate(outputs, inputs)
    if estimate:
        needs = f"this stage writes about {megabytes(estimate[0])} (an estimate: {estimate[1]})"
        if free_at_start is not None:
            needs += f"; {megabytes(free_at_start)} were free when it started"
    elif free_at_start is not None:
        needs = (f"this stage needs more than the {megabytes(free_at_start)} that were free when it started (how much "
                 f"more cannot be estimated: no finished output of this stage to go by)")
    else:
        needs = "how much this stage writes cannot be estimated here"
    return (f"{what} writing {path}: {needs}; {megabytes(free_bytes(path))} free now on {_mount_point(path)}. "
            f"Free some space (or move work/ and results/ to a larger disk) and rerun")


def remove_temporaries(outputs: list[str | Path], since: float) -> list[tuple[Path, int]]:
    """Remove the temporary files and directories the writers make beside each output and that this
    attempt made (changed since `since`): a writer that did not clean up after a failure must not leave
    them filling the disk. Only recent ones: an older file of that name may be another job's.
    Returns (path, bytes) of each one removed.
    """
    removed = []
    for out in map(Path, outputs):
        if not out.parent.is_dir():
            continue
        name, stem = glob.escape(out.name), glob.escape(out.stem)
        candidates = set()
        # The names the writers in facepipe use: NAME.tmp (tables, JSON, models), NAME.PID.tmp.npz
        # (embeddings), NAME.XXXX.tmp (mkstemp), NAME.sha256.tmp (seals), .NAME.verified.tmp (stamps),
        # STEM.partial.SUFFIX (ffmpeg outputs), NAME.partial (directory outputs).
        for pattern in (name + ".tmp", name + ".tmp.*", name + ".*.tmp", name + ".*.tmp.*", "." + name + ".*.tmp",
                        stem + ".partial" + glob.escape(out.suffix), name + ".partial"):
            candidates.update(out.parent.glob(pattern))
        for tmp in sorted(candidates):
            try:
                if tmp.stat().st_mtime < since:
                    continue
                size = _size(tmp)
                if tmp.is_dir() and not tmp.is_symlink():
                    shutil.rmtree(tmp)
                else:
                    tmp.unlink()
                removed.append((tmp, size))
            except OSError:
                continue
    return removed
