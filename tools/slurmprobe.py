"""Keeping Snakemake's start fast on machines with a SLURM client but no reachable controller.

Snakemake loads every installed executor plugin at start; the SLURM plugin then runs
`scontrol show config`, which, when the controller is down, waits 10 s before giving up.
That happens on every `snakemake` call on such a machine (a workstation with the SLURM client
installed, or this project's CI, whose test cluster runs only during the cluster tests).
Local runs do not need the answer, so the test helpers and the benchmark run Snakemake with a
stand-in `scontrol` that fails at once, but only while `scontrol ping` says no controller
answers; with a controller up, nothing changes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

_STUB_DIR: Path | None = None


def controller_unreachable() -> bool:
    if shutil.which("scontrol") is None:
        return False
    try:
        return subprocess.run(["scontrol", "ping"], capture_output=True, timeout=5).returncode != 0
    except (OSError, subprocess.TimeoutExpired):
        return True


def env_for_local_snakemake(env: dict | None = None) -> dict:
    """A copy of env (default os.environ) for a local Snakemake run, without the 10 s probe."""
    global _STUB_DIR
    env = dict(os.environ if env is None else env)
    if not controller_unreachable():
        return env
    if _STUB_DIR is None:
        _STUB_DIR = Path(tempfile.mkdtemp(prefix="facepipe-no-slurm-"))
        stub = _STUB_DIR / "scontrol"
        stub.write_text("#!/bin/sh\necho 'no SLURM controller reachable (facepipe local run)' >&2\nexit 1\n")
        stub.chmod(0o755)
    env["PATH"] = f"{_STUB_DIR}{os.pathsep}{env.get('PATH', '')}"
    return env
