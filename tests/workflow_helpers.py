"""Running the workflow from tests, and reading Snakemake's own dry-run job list."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tools.slurmprobe import env_for_local_snakemake

REPO = Path(__file__).resolve().parents[1]
# The parts of the checkout a workflow run needs (a copy holds these and the test's own inputs).
WORKFLOW_PARTS = ["Snakefile", "rules", "scripts", "config", "envs", "profiles", "report"]

FAULT_SWITCHES = Path(__file__).resolve().parent / "fault_switches"


def fault_env(**switches: str) -> dict:
    """Environment variables for a run whose rules fail on purpose (tests/fault_switches): the
    switches, and that folder first on PYTHONPATH so that each process of the run loads them."""
    path = os.pathsep.join(p for p in (str(FAULT_SWITCHES), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, **switches}



def copy_workflow(dest: Path) -> Path:
    """A fresh copy of the workflow, so each test owns its work/, results/ and .snakemake/."""
    dest.mkdir(parents=True, exist_ok=True)
    for part in WORKFLOW_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, dest / part)
        else:
            shutil.copy2(src, dest / part)
    return dest


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 600,
              env: dict | None = None) -> subprocess.CompletedProcess:
    """Run Snakemake in workdir; env: extra environment variables (e.g. PYTHONPATH)."""
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                          env={**env_for_local_snakemake(), **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-8000:]}")
    return proc


def planned_jobs(workdir: Path, *args: str, env: dict | None = None) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run; {} when nothing is to be done."""
    proc = snakemake(workdir, "--dry-run", *args, env=env)
    text = proc.stdout + proc.stderr
    if "Nothing to be done" in text:
        return {}
    match = re.search(r"Job stats:\njob\s+count\n[-\s]+\n(.*?)\ntotal\s+\d+", text, re.S)
    assert match, f"no job stats in dry-run output:\n{text[-3000:]}"
    jobs = {}
    for line in match.group(1).strip().splitlines():
        rule, count = line.split()
        jobs[rule] = int(count)
    return jobs


def pin_backend(wd: Path, backend: str) -> None:
    """Set the copied workflow's config default backend (most tests are about the wiring)."""
    config = wd / "config" / "config.yaml"
    text = config.read_text()
    assert "\nbackend: auto\n" in text
    config.write_text(text.replace("\nbackend: auto\n", f"\nbackend: {backend}\n"))


def standin_job(dest: Path, inputs: dict[str, Path], row: dict) -> Path:
    """A fresh copy of the workflow at dest on the stand-in backend, with the given files copied
    into its inputs/ folder (name there -> file) and a jobs sheet of one row."""
    import shutil


    wd = copy_workflow(dest)
    pin_backend(wd, "standin")
    (wd / "inputs").mkdir()
    for name, src in inputs.items():
        shutil.copy(src, wd / "inputs" / name)
    write_sheet(wd / "config" / "jobs.tsv", [row])
    return wd


def write_sheet(path: Path, rows: list[dict]) -> Path:
    columns = list(rows[0])
    lines = ["\t".join(columns)] + ["\t".join(str(r[c]) for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def frame_before_after(workdir: Path, name: str, target: Path, number: int, segment: str = "seg_0000",
                       stage: str = "swapped"):
    """A working frame as decoded from the target, and the same frame with the stage's face
    patches applied (what the render stage encodes), both BGR; and the frame's patches."""
    from facepipe.media import files, patches, video

    seg_dir = workdir / "work" / name / "segments"
    manifest = files.read_json(seg_dir / "manifest.json")
    frame = next(f for f in video.iter_frames(target, seg_dir, manifest, segment) if f.number == number)
    by_frame = patches.read_patches(workdir / "work" / name / stage / f"{segment}.parquet")
    return frame.bgr(), video.render_image(frame, by_frame), by_frame.get(number, [])


def track_still(table, faces_file: Path, metric: str):
    """A faces table (detect_frames) through the tracking stage, as a still image job runs it (a
    table of several frames: as a 25 fps video's one segment): returns the tracks table and the
    persons (facepipe.faces.tracking)."""
    import numpy as np

    from facepipe.faces.detection import write_faces
    from facepipe.media.tables import THUMB_SIZE
    from facepipe.media.integrity import read_sealed_json
    from facepipe.media.tables import FRAMES_SCHEMA, read_table, write_table
    from facepipe.faces.tracking import run_tracking

    folder = faces_file.parent
    write_faces(table, folder / "seg_0000.parquet")
    thumb = np.zeros((THUMB_SIZE, THUMB_SIZE, 3), np.uint8).tobytes()
    frames = max(1, int(table["frame"].max()) if len(table) else 1)
    write_table([[{"frame": n, "thumb": thumb}] for n in range(1, frames + 1)], folder / "seg_0000.frames.parquet",
                FRAMES_SCHEMA)
    manifest = {"is_image": frames == 1, "fps": "0/1" if frames == 1 else "25/1", "segments": {"seg_0000": frames},
                "frames": frames, "ranges": {"seg_0000": {"start": 0}}}
    run_tracking(manifest, folder, folder / "tracks.parquet", folder / "persons.json", track_gap=0,
                 smoothing=0, shot_threshold=30, metric=metric)
    return read_table(folder / "tracks.parquet"), read_sealed_json(folder / "persons.json")["persons"]
