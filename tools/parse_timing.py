"""Time what every Snakemake invocation pays to read the workflow: `snakemake -n` on a one-hour job
and the start of one job's own process (a cluster job, or a local `run:` job).

    python tools/parse_timing.py [--repo PATH] [--workdir DIR] [--repeat N]

The one-hour target is a tiny (64x36) clip: the figures depend on the number of segments, not on
pixels. The job's plan (the prepare_target checkpoint) is made first, so the dry run plans every
segment. The job process is timed as Snakemake starts it (`--mode subprocess --target-jobs ...`),
with --dry-run so that it stops where the rule's script would start: reading the Snakefile and
building the job's graph, nothing of the script's own work. --repo times another checkout (e.g. an
older commit unpacked elsewhere); its facepipe package is the one imported.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_PARTS = ["Snakefile", "rules", "scripts", "config", "envs", "profiles", "report"]
NAME = "hour"


def tiny_clip(out: Path, seconds: float) -> Path:
    """A long clip at a tiny size (ffmpeg's own test source)."""
    from facepipe.media.ffmpeg import run_ffmpeg

    if not out.exists():
        run_ffmpeg(["-f", "lavfi", "-i", f"testsrc2=size=64x36:rate=25:duration={seconds}", "-c:v", "libx264",
                    "-preset", "ultrafast", "-g", "250", "-pix_fmt", "yuv420p", str(out)], what="making a tiny clip")
    return out


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return took


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, default=REPO, help="the checkout to time (default: this one)")
    ap.add_argument("--workdir", type=Path, help="where to work (default: a temporary folder)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each kind; medians are reported")
    args = ap.parse_args(argv)
    repo = args.repo.resolve()
    env = {**os.environ, "PYTHONPATH": str(repo)}
    base = args.workdir or Path(tempfile.mkdtemp(prefix="facepipe-parse-"))
    base.mkdir(parents=True, exist_ok=True)
    wd = base / "workflow"
    if wd.exists():
        shutil.rmtree(wd)
    wd.mkdir()
    for part in WORKFLOW_PARTS:
        src = repo / part
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, wd / part)
    sys.path.insert(0, str(repo))
    from facepipe.media.demo import write_astronaut

    clip = tiny_clip(base / "tiny_3600s.mp4", 3600)
    source = write_astronaut(base / "source.png")
    config = ["--config", f"target={clip}", f"source={source}", f"name={NAME}", "backend=standin"]
    smk = [sys.executable, "-m", "snakemake", "--cores", "1"]
    print("making the one-hour job's plan ...", flush=True)
    timed([*smk, f"work/{NAME}/segments", *config], wd, env)
    dry = [timed([*smk, "--dry-run", *config], wd, env) for _ in range(args.repeat)]
    job = [timed([*smk, "--mode", "subprocess", "--target-jobs", f"detect_faces:name={NAME},segment=seg_0000",
                  "--allowed-rules", "detect_faces", "--force", "--dry-run", *config], wd, env)
           for _ in range(args.repeat)]
    parse = [timed([sys.executable, "-m", "snakemake", "--lint", *config], wd, env) for _ in range(args.repeat)]
    runs = lambda ts: ", ".join(f"{t:.2f}" for t in ts)  # noqa: E731
    print(f"checkout: {repo}")
    print(f"{'snakemake -n, one-hour job (after its plan)':52s} {statistics.median(dry):6.2f} s  ({runs(dry)})")
    print(f"{'job process start (subprocess mode, to its script)':52s} {statistics.median(job):6.2f} s  ({runs(job)})")
    print(f"{'snakemake --lint (reading the workflow)':52s} {statistics.median(parse):6.2f} s  ({runs(parse)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
