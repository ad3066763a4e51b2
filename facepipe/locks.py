"""Recovering from a run that was killed (SIGKILL, power loss) without removing its lock.

Snakemake's lock files say which files a run works on but not which process holds them, so
after a hard kill every later run stops with "Directory cannot be locked". The workflow
records the main process's PID and host when it starts; a lock whose recorded owner is no
longer alive on this host is stale and is removed, with a warning. A lock held by a live
process, or by a process on another host, is left alone.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

log = logging.getLogger(__name__)

OWNER_FILE = "facepipe-lock-owner.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A reused PID belonging to something else is not our owner.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"snakemake" in cmdline


def clear_stale_locks(snakemake_dir: str | Path = ".snakemake", *, logger=log) -> bool:
    """Remove locks left by a dead run; then, if no lock is held, record this process as owner.

    Returns True when stale locks were removed.
    """
    base = Path(snakemake_dir)
    locks = base / "locks"
    owner_file = base / OWNER_FILE
    held = sorted(locks.glob("*.lock")) if locks.is_dir() else []
    removed = False
    if held:
        try:
            owner = json.loads(owner_file.read_text())
        except (OSError, ValueError):
            owner = None
        if owner and owner.get("host") == socket.gethostname() and not _alive(int(owner["pid"])):
            for lock in held:
                lock.unlink(missing_ok=True)
            logger.warning(f"removed stale Snakemake lock(s) left by run pid {owner['pid']}, which is no longer "
                           f"running (killed?); add --rerun-incomplete if Snakemake asks")
            removed = True
            held = []
    if not held:
        base.mkdir(parents=True, exist_ok=True)
        tmp = owner_file.with_name(owner_file.name + ".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
        os.replace(tmp, owner_file)
    return removed
