"""The job table: config defaults, the jobs sheet's per-row overrides, and command-line jobs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

# Keys a row of the sheet (or the command line) may set for its own job.
OPTION_KEYS = (
    "backend",
    "enhancer",
    "faces",
    "reference",
    "reference_threshold",
    "source_face",
    "max_height",
    "fps",
    "segment_seconds",
    "providers",
    "precision",
    "batch_size",
    "encoder",
    "preset",
    "crf",
)
INT_KEYS = {"source_face", "max_height", "crf", "batch_size"}
TEXT_COLUMNS = {"name", "target", "source", "reference", "providers", "encoder", "preset",
                "backend", "enhancer", "faces", "precision"}


class JobError(Exception):
    """A jobs sheet or job definition that cannot be used."""


def read_sheet(path: str | Path) -> pd.DataFrame:
    """Read the jobs sheet; text columns stay text (a job named 007 keeps its zeros)."""
    path = Path(path)
    if not path.exists():
        raise JobError(f"jobs sheet {str(path)!r} does not exist")
    header = pd.read_csv(path, sep="\t", nrows=0, comment="#").columns
    dtypes = {c: str for c in header if c in TEXT_COLUMNS}
    sheet = pd.read_csv(path, sep="\t", dtype=dtypes, comment="#", skip_blank_lines=True,
                        keep_default_na=False, na_values=[""])
    unknown = [c for c in sheet.columns if c not in TEXT_COLUMNS and c not in OPTION_KEYS]
    if unknown:
        raise JobError(f"jobs sheet {str(path)!r}: unknown column(s) {unknown}; allowed: name, target, source, "
                       f"{', '.join(OPTION_KEYS)}")
    return sheet


def _clean(value):
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    return value


def build_jobs(config: dict, sheet: pd.DataFrame | None) -> dict[str, dict]:
    """Every job's full option set, keyed by job name.

    A `target` in the config (from --config) defines a single job and replaces the sheet.
    """
    defaults = {k: config.get(k) for k in OPTION_KEYS}
    if config.get("target"):
        if not config.get("source"):
            raise JobError("--config target=... needs source=... too (the image of the face to put in)")
        name = config.get("name") or Path(config["target"]).stem
        rows = [{"name": name, "target": config["target"], "source": config["source"]}]
    else:
        if sheet is None:
            raise JobError("no jobs: set target=... source=... or provide a jobs sheet")
        rows = sheet.to_dict("records")
    jobs: dict[str, dict] = {}
    for i, row in enumerate(rows):
        name = str(row["name"]).strip()
        if name in jobs:
            raise JobError(f"jobs sheet row {i}: job name {name!r} is used twice")
        if name in {".", ".."} or "/" in name:
            raise JobError(f"jobs sheet row {i}: job name {name!r} cannot be used as a file name")
        job = dict(defaults)
        for key in OPTION_KEYS:
            value = _clean(row.get(key))
            if value is None:
                continue
            if key == "providers" and isinstance(value, str):
                value = [p.strip() for p in value.split(",") if p.strip()]
            if key in INT_KEYS:
                value = int(value)
            job[key] = value
        job["name"] = name
        job["target"] = str(row["target"])
        job["source"] = str(row["source"])
        if job["faces"] == "reference" and not job.get("reference"):
            raise JobError(f"job {name!r}: faces=reference needs a reference image (config key `reference`)")
        jobs[name] = job
    if not jobs:
        raise JobError("the jobs sheet has no rows")
    return jobs

