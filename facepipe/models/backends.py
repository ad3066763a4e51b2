"""Which backend a job runs, and the analyzer and swapper for it.

``backend=auto`` (the default) is resolved when the workflow is parsed, per job: the learned
models (insightface's SCRFD and ArcFace, and the job's swapper) when their files are in
resources/models, otherwise ``offline`` (MediaPipe's detector and face mesh with dlib identity,
all inside PyPI packages, and the dense-mesh swap). The resolved name is what the rules see, so
switching backend reruns detection onwards.

The identity embeddings differ between backends, and so does the way they are compared:
ArcFace (512-D, insightface and its stand-ins) by cosine distance, dlib (128-D, offline) by
Euclidean distance. ``reference_threshold`` left empty (the config default) takes the
backend's own calibrated value from REFERENCE_THRESHOLDS; a value the user sets is used as
given, in the chosen backend's metric.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from facepipe.models import BACKENDS, MODELS, crop_size, model_path, models_for, swapper_for
from facepipe.models import LEARNED as LEARNED_GROUP

log = logging.getLogger(__name__)

AUTO = "auto"
CHOICES = (AUTO, *BACKENDS)
# What backend=auto picks: the first backend of the learned models that are not stand-ins
# when their files are there, else the first that needs no file at all.
LEARNED = next(b.name for b in BACKENDS.values() if b.group == LEARNED_GROUP and not b.standin)
OFFLINE = next(b.name for b in BACKENDS.values() if b.group != LEARNED_GROUP)
# The one command that puts the learned models in place (rules/models.smk).
FETCH_COMMAND = "snakemake --cores all fetch_models"

METRICS = {name: b.metric for name, b in BACKENDS.items()}
REFERENCE_THRESHOLDS = {name: b.reference_threshold for name, b in BACKENDS.items()}


@dataclass
class Resolution:
    """The backend and enhancer a job runs with, and what to tell the user about it."""

    backend: str
    enhancer: str
    warnings: list[str] = field(default_factory=list)
    info: list[str] = field(default_factory=list)


def learned_model_files(precision: str, models_dir: str | Path = "resources/models", swapper: str = "") -> list[Path]:
    """The files the learned backend needs for a swap with ``swapper`` (without an enhancer)."""
    return [model_path(key, LEARNED, models_dir) for key in models_for(LEARNED, "none", precision, swapper).values()]


def _present(path: Path) -> bool:
    # Presence only: hashing ~800 MB at every DAG build would be slow, and every real model
    # is hash-checked before use anyway (facepipe.models.download).
    return path.is_file() and path.stat().st_size > 0


def resolve_backend(backend: str, enhancer: str, precision: str,
                    models_dir: str | Path = "resources/models", swapper: str = "") -> Resolution:
    """The concrete backend (and enhancer) for one job's configured choice."""
    if backend not in CHOICES:
        raise ValueError(f"unknown backend {backend!r}; expected one of {CHOICES}")
    if backend != AUTO:
        return Resolution(backend, enhancer)
    missing = [p for p in learned_model_files(precision, models_dir, swapper) if not _present(p)]
    if not missing:
        return Resolution(LEARNED, enhancer, info=[
            f"backend=auto: the learned models are in {models_dir}, so backend {LEARNED} runs"])
    res = Resolution(OFFLINE, enhancer, warnings=[
        f"backend=auto: the learned models are not there ({', '.join(str(p) for p in missing)} missing), "
        f"so backend {OFFLINE.upper()} runs ({BACKENDS[OFFLINE].description}; lower quality than the learned "
        f"swappers). Fetch the learned models with: {FETCH_COMMAND}"])
    if enhancer != "none":
        enh = model_path(enhancer, LEARNED, models_dir)
        if not _present(enh):
            # auto promises a run without downloads, so an enhancer whose model is not there
            # is skipped rather than fetched; set backend=offline explicitly to fetch it.
            res.enhancer = "none"
            res.warnings.append(f"backend=auto: enhancer {enhancer} skipped because {enh} is not there; "
                                f"fetch it with: {FETCH_COMMAND}")
    return res


def resolve_jobs(jobs: dict[str, dict], models_dir: str | Path = "resources/models"
                 ) -> tuple[dict[str, dict], list[str], list[str]]:
    """The jobs with backend, enhancer, swapper and reference_threshold resolved, as new dicts (the
    given ones are left as they are); ValueError naming the job for a swapper that does not run
    with its backend.

    Returns the resolved jobs and the (deduplicated) warnings and info lines, each naming the jobs
    it concerns.
    """
    resolved: dict[str, dict] = {}
    warnings: dict[str, list[str]] = {}
    info: dict[str, list[str]] = {}
    for name, given in jobs.items():
        job = dict(given)
        configured, chosen = job["backend"], job.get("swapper") or ""
        job["configured_swapper"], job["configured_enhancer"] = chosen, job["enhancer"]
        res = resolve_backend(configured, job["enhancer"], job["precision"], models_dir, chosen)
        job["backend"], job["enhancer"] = res.backend, res.enhancer
        own = BACKENDS[res.backend]
        if configured == AUTO and chosen in MODELS and MODELS[chosen].group != own.group:
            chosen = ""  # auto fell back to the offline backend (warned above): its own swapper runs
        job["swapper"] = chosen or own.default_swapper
        try:
            swapper_for(res.backend, job["swapper"], job["precision"])
            crop_size(job["swapper"], job.get("pixel_boost") or 0)
        except ValueError as exc:
            raise ValueError(f"job {name!r}: {exc}") from None
        if job.get("reference_threshold") is None:
            job["reference_threshold"] = REFERENCE_THRESHOLDS[res.backend]
        for line in res.warnings:
            warnings.setdefault(line, []).append(name)
        for line in res.info:
            info.setdefault(line, []).append(name)
        resolved[name] = job
    fmt = lambda d: [f"{line} (jobs: {', '.join(names)})" for line, names in d.items()]  # noqa: E731
    return resolved, fmt(warnings), fmt(info)


def backend_summary(jobs: dict[str, dict]) -> str:
    """One line naming the backend each job ran with, e.g. for the end of a run."""
    by_backend: dict[str, list[str]] = {}
    for name, job in jobs.items():
        by_backend.setdefault(job["backend"], []).append(name)
    return "; ".join(f"backend {b}: {', '.join(names)}" for b, names in sorted(by_backend.items()))


def face_crop_kind(swapper: str, pixel_boost: int = 0) -> str:
    """The crop of each face detection keeps for the job's swapper (facepipe.faces.detection.face_crop)."""
    # lazy: the Snakefile imports this module while it parses, so it loads only what it uses
    from facepipe.models import crop_kind

    return crop_kind(swapper, pixel_boost)


def make_analyzer(backend: str, detector: str | Path, recognizer: str | Path, providers: list[str], *,
                  threads: int = 0, embed: bool = True, **learned_kwargs):
    """The face analyzer of a backend; ``learned_kwargs`` (precision, det_size) apply to one on ONNX Runtime."""
    # lazy: the Snakefile imports this module while it parses, so it loads only what it uses
    from facepipe.models.zoo import load_analyzer

    return load_analyzer(backend, detector, recognizer, providers, threads=threads, embed=embed, **learned_kwargs)


def make_swappers(swapper: str, model: str | Path | None, sources: dict[str, dict], providers: list[str], *,
                  precision: str = "fp32", threads: int = 0, batch_size: int = 1, pixel_boost: int = 0,
                  shape_transfer: int | None = None, source_file: str = "source embedding") -> dict[str, tuple]:
    """key -> (swapper, its prepared source) for each source record: one swapper (one model
    session) serves every source. ``shape_transfer`` (None: the swapper's default) is the offline
    mesh swap's; the other swappers take it and do not use it."""
    # lazy: the Snakefile imports this module while it parses, so it loads only what it uses
    from facepipe.models.zoo import load

    if not sources:
        return {}
    shared = load(swapper, model, providers, precision=precision, threads=threads, batch_size=batch_size,
                  pixel_boost=pixel_boost, shape_transfer=shape_transfer)
    prepared = {}
    for key, record in sources.items():
        try:
            prepared[key] = (shared, shared.prepare_source(record))
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{source_file}: {exc}") from None
    return prepared


def fetchable_learned_models(jobs: dict[str, dict] | None = None,
                             models_dir: str | Path = "resources/models") -> list[str]:
    """The learned models `snakemake --cores all fetch_models` fetches and verifies: every job's
    detector, recognizer, swapper and enhancer as the job chose them (also for a job that
    backend=auto sent to the offline backend, which is what the command is for); without jobs,
    the learned backend's defaults. FP16 copies are made from the FP32 files when precision=fp16
    asks for them (rule make_fp16_model), not fetched."""
    wanted: list[str] = []
    for job in (jobs or {"": {}}).values():
        swapper = job.get("configured_swapper") or ""
        if swapper not in MODELS or MODELS[swapper].group != LEARNED_GROUP:
            swapper = ""
        enhancer = job.get("configured_enhancer") or "none"
        for key in models_for(LEARNED, enhancer, "fp32", swapper, job.get("face_mask") or ()).values():
            if MODELS[key].fetchable:
                wanted.append(str(model_path(key, LEARNED, models_dir)))
    return list(dict.fromkeys(wanted))
