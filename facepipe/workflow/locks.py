"""Snakemake's locks, made safe to clear after a hard kill and safe against runs that start together.

Snakemake's lock files say which files a run works on but not which process holds them, so after
a hard kill (SIGKILL, power loss) every later run stops with "Directory cannot be locked". A PID
recorded next to the locks cannot tell whether their run is alive: runs that start together
overwrite each other's record, so it may name a run that already gave up while the run that
holds the locks is still working.

Instead the kernel keeps the answer. Every facepipe process working in a directory (the main
Snakemake process of a run, and each rule script it starts) holds a *shared* flock on
`.snakemake/facepipe-run.lock` for its whole life; the kernel drops it when the process ends,
however it ends (SIGKILL included). Locks are removed as stale only by a process that gets an
*exclusive* flock on that file without waiting, which proves that no other facepipe process is
alive in this directory; it then holds the shared lock like every run. A lock held by a live run
is never removed, whatever else is on disk.

Snakemake itself checks for conflicting locks and then writes its own in two steps, so two runs
that start at the same moment can both pass the check. A second flock (`facepipe-gate.lock`)
closes that gap between facepipe runs: a run holds it exclusively from the moment it starts to plan
its jobs (rules/common.smk: plan_run) until its lock files are on disk, so the next run checks only
after the first one's locks exist (and stops with Snakemake's lock error when they conflict).

Only processes on one host see each other's flocks on a local file system; on NFSv4 and Lustre
flocks reach across hosts. Where the file system refuses flocks, no lock is ever removed
automatically (a run cannot prove the others are gone): `snakemake --unlock` does it by hand.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

RUN_LOCK = "facepipe-run.lock"
GATE_LOCK = "facepipe-gate.lock"
# Longest a run waits for another run to write its lock files (it reads its Snakefile and builds
# its job graph first; seconds, usually) before going ahead without the gate.
GATE_WAIT_S = 150.0
# Longest a run holds the gate when its lock files never appear (--nolock, or a run that fails
# before locking and somehow keeps running): others must not wait forever on it.
GATE_HOLD_S = 120.0
# Shared flocks only wait on a process clearing stale locks, which takes milliseconds.
SHARED_WAIT_S = 30.0

# Kept open for the life of the process: closing the file would drop its flock. Python opens files
# close-on-exec, so ffmpeg and other programs a process starts do not inherit them.
_held: dict[Path, int] = {}
_held_lock = threading.Lock()


def _flock(fd: int, op: int, wait: float) -> bool:
    """flock(op) without blocking, retried until `wait` seconds have passed; True when obtained."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def _open_run_lock(base: Path) -> int:
    path = (base / RUN_LOCK).resolve()
    with _held_lock:
        if path not in _held:
            _held[path] = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        return _held[path]


def holders(path: str | Path) -> list[int]:
    """PIDs other than this one that hold a flock on `path` (from /proc/locks; best effort, Linux).

    The kernel records the process that took the lock; a child that inherited it is not listed.
    """
    try:
        st = os.stat(path)
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    pids = []
    for line in lines:
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue  # "->" marks a waiter, not a holder
        try:
            major, minor, inode = fields[5].split(":")
            if (int(inode), int(major, 16), int(minor, 16)) != (st.st_ino, os.major(st.st_dev),
                                                               os.minor(st.st_dev)):
                continue
            pid = int(fields[4])
        except ValueError:
            continue
        if pid != os.getpid() and pid not in pids:
            pids.append(pid)
    return pids


def _describe(pids: list[int]) -> str:
    if not pids:
        return ""
    shown = []
    for pid in pids[:5]:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = ""
        shown.append(f"pid {pid}" + (f" ({cmd[:80]})" if cmd else ""))
    return ": " + ", ".join(shown)


def hold_run_lock(snakemake_dir: str | Path = ".snakemake", *, wait: float = SHARED_WAIT_S) -> bool:
    """Hold the shared run lock for the rest of this process's life: this process belongs to a live run.

    Rule scripts call it too, so a job that outlives a killed main process still counts as its run
    being alive (its outputs are being written; another run must not start the same job). Returns
    False where the directory or flocks are unavailable; nothing else changes then.
    """
    base = Path(snakemake_dir)
    if not base.is_dir():
        return False
    try:
        fd = _open_run_lock(base)
        return _flock(fd, fcntl.LOCK_SH, wait)
    except OSError as exc:  # ENOLCK/EOPNOTSUPP: a file system without flocks
        log.debug("no run lock in %s: %s", base, exc)
        return False


def _release_gate_when_locked(gate_fd: int, lockdir: Path, hold: float) -> None:
    """Close the gate once this run's Snakemake lock files are on disk (or after `hold` seconds)."""

    def snapshot() -> dict[str, tuple[int, int]]:
        found = {}
        try:
            for entry in os.scandir(lockdir):
                if entry.name.endswith(".lock"):
                    st = entry.stat()
                    found[entry.name] = (st.st_ino, st.st_ctime_ns)
        except OSError:
            pass
        return found

    before = snapshot()

    def watch() -> None:
        deadline = time.monotonic() + hold
        input_seen = None
        try:
            while time.monotonic() < deadline:
                new = [n for n, sig in snapshot().items() if before.get(n) != sig]
                # Snakemake writes the input lock, then the output lock, one after the other.
                if any(n.endswith(".output.lock") for n in new):
                    return
                if any(n.endswith(".input.lock") for n in new):
                    input_seen = input_seen or time.monotonic()
                    if time.monotonic() - input_seen > 1.0:
                        return  # a run without outputs to lock
                time.sleep(0.05)
        finally:
            os.close(gate_fd)

    threading.Thread(target=watch, name="facepipe-lock-gate", daemon=True).start()


def _enter_gate(base: Path, logger) -> int | None:
    try:
        fd = os.open(base / GATE_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        logger.warning(f"facepipe: cannot open {base / GATE_LOCK} ({exc}); runs started at the same moment "
                       f"are not kept apart")
        return None
    try:
        if _flock(fd, fcntl.LOCK_EX, 0):
            return fd
        logger.info("waiting for another facepipe run in this directory to lock its files")
        if _flock(fd, fcntl.LOCK_EX, GATE_WAIT_S):
            return fd
        logger.warning(f"facepipe: another run has held {base / GATE_LOCK} for over {GATE_WAIT_S:.0f} s; "
                       f"going ahead without it")
    except OSError as exc:
        logger.warning(f"facepipe: flock on {base / GATE_LOCK} failed ({exc}); runs started at the same "
                       f"moment are not kept apart")
    os.close(fd)
    return None


def clear_stale_locks(snakemake_dir: str | Path = ".snakemake", *, logger=log, gate: bool = True) -> bool:
    """Remove Snakemake locks that no live facepipe process holds; then hold this run's shared lock.

    Called once by the main process of a real run as it plans its jobs (rules/common.smk: plan_run),
    before Snakemake takes its own locks. Returns True when stale locks were removed. With `gate`,
    the run also holds the start gate until its own lock files appear (see the module's docstring).
    """
    base = Path(snakemake_dir)
    base.mkdir(parents=True, exist_ok=True)
    lockdir = base / "locks"
    gate_fd = _enter_gate(base, logger) if gate else None
    try:
        try:
            fd = _open_run_lock(base)
        except OSError as exc:
            logger.warning(f"facepipe: cannot open {base / RUN_LOCK} ({exc}); Snakemake locks are never "
                           f"removed automatically here (snakemake --unlock removes them by hand)")
            return False
        held = sorted(lockdir.glob("*.lock")) if lockdir.is_dir() else []
        removed = False
        if held:
            try:
                alone = _flock(fd, fcntl.LOCK_EX, 0)
            except OSError as exc:
                logger.warning(f"facepipe: flock on {base / RUN_LOCK} failed ({exc}); whether the run that "
                               f"holds the Snakemake locks is alive cannot be told here, so they are kept "
                               f"(snakemake --unlock removes them when it is not)")
                return False
            if alone:
                # No other facepipe process is alive in this directory: nobody can be using these.
                for lock in held:
                    lock.unlink(missing_ok=True)
                logger.warning(f"removed stale Snakemake lock(s) in {lockdir}: the run that held them is no "
                               f"longer running (killed?); add --rerun-incomplete if Snakemake asks")
                removed = True
            else:
                logger.info(f"Snakemake locks in {lockdir} are kept: another facepipe run is still working in "
                            f"this directory{_describe(holders(base / RUN_LOCK))}")
        try:
            # Converts an exclusive lock taken above, or waits out another run's brief exclusive one.
            if not _flock(fd, fcntl.LOCK_SH, SHARED_WAIT_S):
                logger.warning(f"facepipe: could not take the shared lock on {base / RUN_LOCK}; a later run "
                               f"may take this run's locks for stale")
        except OSError as exc:
            logger.warning(f"facepipe: flock on {base / RUN_LOCK} failed ({exc})")
        return removed
    finally:
        if gate_fd is not None:
            _release_gate_when_locked(gate_fd, lockdir, GATE_HOLD_S)
