"""What made a result, written into it, and checked whenever the workflow builds its plan.

Snakemake decides what to rerun from file times and from its own metadata in .snakemake/.
Both can be lost or misleading: delete work/ or .snakemake/ and change the source, and
Snakemake sees a result newer than everything it knows of, and keeps it. So the workflow keeps
its own account, independent of Snakemake's:

- Every result carries a **record** in its metadata: a digest of its inputs' content, the job's
  settings and the code version (`job_record`). At plan time the record in an existing result
  is compared with the job's current one. A result without a record was not made here and is
  never adopted or overwritten: the run stops before any job. A result whose record differs is
  remade.
- Every stage of a job has a **stamp**, `work/{name}/stamps/{stage}.json`, an input of its
  rule: the part of the record that stage depends on. A stamp is rewritten (so it becomes newer
  than the stage's outputs, and Snakemake reruns the stage and everything after it) exactly when
  its content changes. A stamp that has to be made anew while the result's record matches the
  job (work/ deleted, nothing changed) is dated in the past, so nothing reruns.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import facepipe

# Which inputs and settings each stage's output depends on (besides the code version and the
# files it reads from earlier stages, which Snakemake follows by time). Every option a rule
# takes through params: appears under its stage (tests/test_provenance.py checks the rules).
STAGES: dict[str, tuple[str, ...]] = {
    "probe_target": ("target",),
    "prepare_target": ("target", "max_height", "fps", "segment_seconds"),
    "detect_faces": ("target", "backend", "track_gap", "providers", "degrade", "min_free_gpu_mb"),
    "track_faces": ("target", "backend", "track_gap", "keypoint_smoothing", "shot_threshold"),
    "cast_sheet": ("target", "backend", "track_gap", "keypoint_smoothing", "shot_threshold"),
    "preview_plan": ("target", "backend", "track_gap", "keypoint_smoothing", "shot_threshold"),
    "preview_sheet": ("target",),
    "qc_report": ("target", "backend", "providers"),
    "embed_face": ("source", "reference", "map", "source_face", "providers", "backend"),
    "swap_faces": ("faces", "map", "reference_threshold", "providers", "precision", "backend", "batch_size",
                   "degrade", "min_free_gpu_mb"),
    "enhance_faces": ("enhancer", "providers", "batch_size", "degrade", "min_free_gpu_mb"),
    "render_segment": ("target", "encoder", "preset", "crf"),
    "mux_video": ("target",),
    "finalize_image": ("target",),
}
INPUT_FILES = ("target", "source", "reference")
# Settings that belong to the whole run rather than to a row of the sheet.
GLOBAL_SETTINGS = ("degrade", "min_free_gpu_mb")
# Made by a rule of the workflow: Snakemake follows such a file by its time, so its content
# is not digested (it may not exist yet when the plan is made).
MADE_BY_WORKFLOW = "made by the workflow"
MISSING = "missing"
STAMP_DIR = "stamps"
# The time given to a stamp made anew for a job whose result is current: older than any output.
PAST = 1


def code_version(workflow_dir: str | Path | None = None) -> str:
    """Digest of the package's code and of the workflow's Snakefile, rules and scripts."""
    h = hashlib.sha256()
    package = Path(facepipe.__file__).parent
    files = [(package, p) for p in package.rglob("*.py")]
    if workflow_dir is not None:
        base = Path(workflow_dir)
        files += [(base, base / "Snakefile")] if (base / "Snakefile").is_file() else []
        files += [(base, p) for p in (base / "rules").glob("*.smk")]
        files += [(base, p) for p in (base / "scripts").glob("*.py")]
    for root, path in sorted(files, key=lambda rp: str(rp[1].relative_to(rp[0]))):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def digest_or_missing(digest):
    """A digest function that gives MISSING for a file that is not there (Snakemake then stops
    on the missing input, naming it) instead of failing while the plan is made."""
    return lambda path: digest(path) if Path(path).is_file() else MISSING


class DigestCache:
    """File content digests, remembered by (path, size, mtime, inode) between runs: a target of
    several GB is read once, not at every plan. A file that changes gets a new entry."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}
        self.changed = False

    def digest(self, file: str | Path) -> str:
        from facepipe.integrity import digest_file

        file = Path(file)
        st = file.stat()
        key = str(file.resolve())
        ident = [st.st_size, st.st_mtime_ns, st.st_ino]
        entry = self.entries.get(key)
        if entry and entry.get("id") == ident:
            return entry["sha256"]
        value = digest_file(file)
        self.entries[key] = {"id": ident, "sha256": value}
        self.changed = True
        return value

    def save(self) -> None:
        if not self.changed:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.entries))
        os.replace(tmp, self.path)


def job_record(job: dict, config: dict, *, code: str, digest, made_by_workflow) -> dict:
    """The record of what makes a job's result: its input files' content, settings and code.

    `digest(path)` gives a file's content digest; `made_by_workflow(path)` says whether a rule
    makes the file (then it is not digested: it may not exist yet).
    """
    from facepipe.jobs import face_images

    inputs = {}
    for role, path in {"target": job["target"], **face_images(job)}.items():
        inputs[role] = MADE_BY_WORKFLOW if made_by_workflow(path) else digest(path)
    settings = {k: v for k, v in job.items() if k not in (*INPUT_FILES, "name")}
    settings.update({k: config.get(k) for k in GLOBAL_SETTINGS})
    return {"facepipe": facepipe_version(), "code": code, "inputs": inputs, "settings": settings}


def facepipe_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("facepipe")
    except PackageNotFoundError:
        return "unknown"


def record_text(record: dict) -> str:
    """The record as it is written into a result (compact, keys sorted: equal records, equal text)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)


def stage_stamp(record: dict, stage: str) -> str:
    """A stage's stamp content: the parts of the record it depends on, and the code version."""
    wanted = STAGES[stage]
    # A map's photos are inputs map0, mapref0, ... (facepipe.jobs.face_images): "map" wants them all.
    part = {"code": record["code"],
            "inputs": {k: v for k, v in record["inputs"].items()
                       if k in wanted or ("map" in wanted and k.startswith("map"))},
            "settings": {k: v for k, v in record["settings"].items() if k in wanted}}
    return json.dumps(part, sort_keys=True, indent=1, default=str) + "\n"


def stamp_path(name: str, stage: str) -> str:
    return f"work/{name}/{STAMP_DIR}/{stage}.json"


def result_state(result: str | Path, record: dict, read_record) -> str:
    """'absent', 'foreign' (a file the workflow did not make), 'current' or 'stale'."""
    result = Path(result)
    if not result.exists():
        return "absent"
    found = read_record(result)
    if found is None:
        return "foreign"
    try:
        found = json.loads(found)
    except ValueError:
        return "stale"
    return "current" if found == json.loads(record_text(record)) else "stale"


def settle_stamps(name: str, record: dict, state: str, stages=STAGES, *, dry_run: bool = False) -> list[str]:
    """Write the job's stage stamps; returns the stages whose stamp changed (they rerun).

    A stamp is rewritten only when its content changes. One made anew is dated in the past
    when the result is current (nothing needs remaking), else now. A stale result also renews
    the final stage's stamp, so at least the result is remade even when every stage's stamp
    still matches. A dry run only makes missing stamps: trying a setting with -n must not make
    the next real run with the old setting redo anything.
    """
    renewed = []
    for stage in stages:
        path = Path(stamp_path(name, stage))
        content = stage_stamp(record, stage)
        try:
            old = path.read_text()
        except OSError:
            old = None
        if old is not None and dry_run:
            continue
        if old == content and not (state == "stale" and stage in ("mux_video", "finalize_image")):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(content)
        os.replace(tmp, path)
        if old is None and state == "current":
            os.utime(path, (PAST, PAST))
        else:
            renewed.append(stage)
    return renewed
