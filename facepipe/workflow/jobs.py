"""The job table: config defaults, the jobs sheet's per-row overrides, and command-line jobs."""

from __future__ import annotations

import difflib
import io
from pathlib import Path

import pandas as pd

from facepipe.faces import roles
from facepipe.faces.selection import MapError, map_text, parse_map
from facepipe.workflow import options
from facepipe.workflow.schema import read_schema

# Every key is declared once, in facepipe.workflow.options; these are read from it.
# Keys a row of the sheet (or the command line) may set for its own job.
OPTION_KEYS = options.sheet_keys()
INT_KEYS = options.keys_of_type("integer") & set(OPTION_KEYS)
TEXT_COLUMNS = options.text_columns()
# Options that are lists: a sheet cell gives them comma-separated (numbers for mask_padding).
LIST_KEYS = options.keys_of_type("list") & set(OPTION_KEYS)
NUMBER_LISTS = {o.name for o in options.OPTIONS if o.type == "list" and o.item == "number"}


class JobError(Exception):
    """A jobs sheet or job definition that cannot be used."""


def nearest(key: str, valid) -> str:
    """' (did you mean X?)' for the valid key closest to a mistyped one, or ''."""

    match = difflib.get_close_matches(str(key), list(valid), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _sheet_lines(text: str) -> str:
    """The sheet without its comment lines. Only a line that starts with # is a comment: inside a
    cell, # is a character like any other (a file named 'take #2.mp4')."""
    return "".join(line for line in text.splitlines(keepends=True) if not line.lstrip().startswith("#"))


def read_sheet(path: str | Path) -> pd.DataFrame:
    """Read the jobs sheet; text columns stay text (a job named 007 keeps its zeros)."""

    path = Path(path)
    if not path.exists():
        raise JobError(f"jobs sheet {str(path)!r} does not exist")
    text = _sheet_lines(path.read_text(encoding="utf-8-sig"))
    header = pd.read_csv(io.StringIO(text), sep="\t", nrows=0).columns
    dtypes = {c: str for c in header if c in TEXT_COLUMNS}
    sheet = pd.read_csv(io.StringIO(text), sep="\t", dtype=dtypes, skip_blank_lines=True,
                        keep_default_na=False, na_values=[""])
    allowed = ("name", "target", "source", *OPTION_KEYS)
    for column in sheet.columns:
        if column not in allowed:
            raise JobError(f"jobs sheet {str(path)!r}: unknown column {column!r}{nearest(column, allowed)}; "
                           f"allowed: {', '.join(allowed)}")
    for column in ("target",):
        if column not in sheet.columns:
            raise JobError(f"jobs sheet {str(path)!r}: the column {column!r} is missing")
    return sheet


BOOLEAN_WORDS = {"true": True, "yes": True, "on": True, "1": True,
                 "false": False, "no": False, "off": False, "0": False}


def check_config(config: dict, schema_path: str | Path) -> None:
    """Before the schema sees it: every key must be one the workflow knows (a typo is an error
    naming the nearest valid key, not an option silently ignored), and values are read as a user
    writes them on the command line (keep_intermediates=true, name=2024). Changes config in place."""
    schema = read_schema(schema_path)
    properties = schema["properties"]
    for key in list(config):
        if key not in properties:
            raise JobError(f"unknown configuration key {key!r} (in --config or the config file)"
                           f"{nearest(key, properties)}; valid keys: {', '.join(sorted(properties))}")
    for key, spec in properties.items():
        if "$ref" in spec:  # "#/definitions/options/NAME": the option's own definition
            spec = schema["definitions"]["options"][spec["$ref"].rsplit("/", 1)[1]]
        value, kind = config.get(key), spec.get("type")
        if kind == "array" and isinstance(value, list) and spec.get("items", {}).get("type") == "number":
            # --config mask_padding=[0,0,10,0] gives the numbers as text.
            try:
                config[key] = [float(v) if isinstance(v, str) else v for v in value]
            except ValueError:
                pass  # the schema's check names the value
            continue
        if kind == "boolean" and isinstance(value, (str, int)) and not isinstance(value, bool):
            word = str(value).strip().lower()
            if word not in BOOLEAN_WORDS:
                raise JobError(f"configuration key {key!r}: {value!r} is not true or false")
            config[key] = BOOLEAN_WORDS[word]
        elif kind == "string" and isinstance(value, (int, float)) and not isinstance(value, bool):
            config[key] = str(value)


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
        name = config.get("name") or Path(config["target"]).stem
        rows = [{"name": name, "target": config["target"], "source": config.get("source") or ""}]
    else:
        if sheet is None:
            raise JobError("no jobs: set target=... source=... or provide a jobs sheet")
        rows = sheet.to_dict("records")
    jobs: dict[str, dict] = {}
    made_by: dict[str, str] = {}
    for i, row in enumerate(rows):
        # Without a name, the target's file name (results/clip.mp4 for videos/clip.mp4).
        given = _clean(row.get("name"))
        name = str(given).strip() if given is not None else Path(str(row["target"])).stem
        if name in jobs:
            raise JobError(f"jobs sheet rows {made_by[name]} and {i + 1} would both write results/{name}.* "
                           f"(targets {jobs[name]['target']!r} and {str(row['target'])!r}): give each a "
                           f"distinct name in the sheet's name column")
        if name in {".", ".."} or "/" in name:
            raise JobError(f"jobs sheet row {i + 1}: job name {name!r} cannot be used as a file name")
        job = dict(defaults)
        for key in OPTION_KEYS:
            value = _clean(row.get(key))
            if value is None:
                continue
            if key in LIST_KEYS and isinstance(value, str):
                value = [p.strip() for p in value.split(",") if p.strip()]
                if key in NUMBER_LISTS:
                    value = [float(p) for p in value]
            if key in INT_KEYS:
                value = int(value)
            job[key] = value
        job["name"] = name
        job["swapper"] = str(job.get("swapper") or "")
        _check_models(name, job)
        job["target"] = str(row["target"])
        job["source"] = str(_clean(row.get("source")) or "")
        try:
            job["map"] = map_text(parse_map(job.get("map")))
        except MapError as exc:
            raise JobError(f"job {name!r}: {exc}") from None
        if job["map"]:
            # The map gives every swapped person's source: faces, source and reference are not used.
            job["source"] = job["reference"] = ""
        elif not job["source"]:
            raise JobError(f"job {name!r} has no source (the image of the face to put in): set source=..., "
                           f"or map=... to give persons their own sources")
        elif job["faces"] == "reference" and not job.get("reference"):
            raise JobError(f"job {name!r}: faces=reference needs a reference image (config key `reference`)")
        jobs[name] = job
        made_by[name] = str(i + 1)
    if not jobs:
        raise JobError("the jobs sheet has no rows")
    for name in jobs:
        for sheet in ("cast", "preview"):
            if f"{name}.{sheet}" in jobs:
                raise JobError(f"jobs {name!r} and {name + '.' + sheet!r} would both write results/{name}.{sheet}.png "
                               f"(the first's {sheet} sheet, the second's still result): rename one of them")
    return jobs



def _check_models(name: str, job: dict) -> None:
    """A swapper or enhancer the registry does not offer is an error naming the ones it does."""
    # lazy: the Snakefile imports this module while it parses, so it loads only what it uses
    from facepipe.models import offered

    swappers = offered("swapper")
    if job["swapper"] and job["swapper"] not in swappers:
        raise JobError(f"job {name!r}: unknown swapper {job['swapper']!r}{nearest(job['swapper'], swappers)}; "
                       f"expected empty (the backend's own) or one of {', '.join(swappers)}")
    enhancers = offered("enhancer")
    if job.get("enhancer") not in ("none", *enhancers):
        enhancer = job.get("enhancer")
        raise JobError(f"job {name!r}: unknown enhancer {enhancer!r}{nearest(enhancer, enhancers)}; "
                       f"expected none or one of {', '.join(enhancers)}")


def face_images(job: dict) -> dict[str, str]:
    """Every face photo a job reads, by embedding role (facepipe.faces.roles): source, reference, and for
    a map entry i map{i} (its source photo) and mapref{i} (its reference photo, for an entry by
    reference)."""
    images = {role: job[role] for role in (roles.SOURCE, roles.REFERENCE) if job.get(role)}
    for i, entry in enumerate(parse_map(job.get("map"))):
        images[roles.map_source(i)] = entry.source
        if entry.reference is not None:
            images[roles.map_reference(i)] = entry.reference
    return images


def swap_roles(job: dict) -> list[str]:
    """The embedding roles the swap stage reads: the map's, else the source (and reference)."""
    from_map = [role for role in face_images(job) if roles.from_map(role)]
    if from_map:
        return from_map
    return [roles.SOURCE, roles.REFERENCE] if job["faces"] == "reference" else [roles.SOURCE]
