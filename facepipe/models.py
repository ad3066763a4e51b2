"""Model registry: which ONNX files the workflow needs, where they come from,
and the SHA-256 each must have.

Pinning the hash here (rather than trusting whatever a mirror serves) is what
lets `facepipe.download` refuse a tampered or truncated model, and lets the
workflow tell a real model from a stand-in.

Hash provenance (checked with public sources in the project's research notes;
each value was found in at least two independent projects that pin it):

* det_10g.onnx / w600k_r50.onnx: the members of insightface's buffalo_l.zip
  (v0.7 release). Pinned by several downstream projects (e.g. face-swap
  model manifests and the Roop/ReActor README "safe model hashes" section).
  buffalo_l.zip itself hashes to
  80ffe37d8a5940d59a7384c201a2a38d4741f2f3c51eef46ebb28218a7b0ca2f
  (288,621,354 bytes); we verify the extracted members, not the zip, because
  the members are what we run.
* inswapper_128.onnx: FaceFusion's models-3.0.0 copy is NOT byte-identical to
  the file insightface originally circulated. FaceFusion's copy
  (555,303,150 bytes) hashes to a290273e...; the insightface original
  (554,253,681 bytes, cited in deepinsight/insightface issue #2315) hashes to
  e4a3f08c.... Both are the same network; we download FaceFusion's and also
  accept the original when a user places it by hand.
* gfpgan_1.4.onnx: FaceFusion models-3.0.0, 340,299,087 bytes.
* inswapper_128_fp16.onnx: no published SHA-256 could be found (FaceFusion
  only publishes CRC32 ``.hash`` side files). It is left unpinned (see the
  UNVERIFIED note below); `facepipe.download.fetch` refuses to install an
  unpinned download.

We point det/rec at buffalo_l.zip (insightface's own release) rather than
FaceFusion's single-file ``arcface_w600k_r50.onnx`` because the zip members
are the files insightface's Python classes were built around and their hashes
are the best-attested ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

ROLES = ("detector", "recognizer", "swapper", "enhancer")
# offline: dlib models shipped inside PyPI packages plus a classic swapper (facepipe.offline);
# "auto" is not a backend but a choice, resolved per job by facepipe.backends.resolve_backend.
BACKENDS = ("insightface", "standin", "offline")
PRECISIONS = ("fp32", "fp16")

_BUFFALO_L_ZIP = "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip"
_FACEFUSION = "https://github.com/facefusion/facefusion-assets/releases/download/models-3.0.0"

_INSIGHTFACE_LICENCE = "non-commercial research only (insightface pretrained models)"


@dataclass(frozen=True)
class ModelSpec:
    """One downloadable model file.

    When the file ships inside an archive, ``url`` and ``archive`` are the
    archive's URL and ``archive_member`` is the path inside it; ``sha256`` is
    always the hash of the extracted ``.onnx`` file, because that is what runs.
    """

    key: str
    role: str
    filename: str
    url: str
    sha256: str
    licence: str
    archive: str | None = None
    archive_member: str | None = None
    # Other byte-exact redistributions of the same network that are also
    # acceptable when already on disk (e.g. placed by hand).
    also_accept: tuple[str, ...] = field(default=())
    # Made here from this (verified) model instead of downloaded: see facepipe/fp16.py.
    derived_from: str | None = None

    @property
    def accepted_sha256(self) -> tuple[str, ...]:
        """Every hash a local copy may have; empty when the model is unpinned."""
        return tuple(h for h in (self.sha256, *self.also_accept) if h)

    @property
    def pinned(self) -> bool:
        return bool(self.sha256)


MODELS: dict[str, ModelSpec] = {
    spec.key: spec
    for spec in (
        ModelSpec(
            key="det_10g",
            role="detector",
            filename="det_10g.onnx",
            url=_BUFFALO_L_ZIP,
            sha256="5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91",
            licence=_INSIGHTFACE_LICENCE,
            archive=_BUFFALO_L_ZIP,
            archive_member="det_10g.onnx",
        ),
        ModelSpec(
            key="w600k_r50",
            role="recognizer",
            filename="w600k_r50.onnx",
            url=_BUFFALO_L_ZIP,
            sha256="4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43",
            licence=_INSIGHTFACE_LICENCE,
            archive=_BUFFALO_L_ZIP,
            archive_member="w600k_r50.onnx",
        ),
        ModelSpec(
            key="inswapper_128",
            role="swapper",
            filename="inswapper_128.onnx",
            url=f"{_FACEFUSION}/inswapper_128.onnx",
            # FaceFusion models-3.0.0 copy.
            sha256="a290273ed497312095dac48cdef20feec9d5208298223dd01288ab202b54bea7",
            licence=_INSIGHTFACE_LICENCE,
            # The original insightface-circulated file (insightface issue #2315).
            also_accept=("e4a3f08c753cb72d04e10aa0f7dbe3deebbf39567d4ead6dce08e98aa49e16af",),
        ),
        ModelSpec(
            key="inswapper_128_fp16",
            role="swapper",
            filename="inswapper_128_fp16.onnx",
            url=f"{_FACEFUSION}/inswapper_128_fp16.onnx",
            # No published SHA-256 exists for FaceFusion's copy (only a CRC32 .hash
            # file), so the workflow does not download it: it converts the verified
            # inswapper_128 to FP16 itself (rule make_fp16_model), FP32 inputs and
            # outputs kept, as FaceFusion's file has.
            sha256="",
            licence=_INSIGHTFACE_LICENCE,
            derived_from="inswapper_128",
        ),
        ModelSpec(
            key="gfpgan_1.4",
            role="enhancer",
            filename="gfpgan_1.4.onnx",
            url=f"{_FACEFUSION}/gfpgan_1.4.onnx",
            sha256="accc4757b26bdb89b32b4d3500d4f79c9dff97c1dd7c7104bf9dcb95e3311385",
            licence="Apache-2.0 (GFPGAN by TencentARC; ONNX export by FaceFusion)",
        ),
    )
}


def model_path(key: str, backend: str, models_dir: str | Path = "resources/models") -> Path:
    """Where the workflow expects model ``key`` for ``backend``.

    Stand-ins live in their own subfolder so a stand-in can never be mistaken
    for (or overwrite) a real model with the same file name.
    """
    if backend == "offline":
        from facepipe.offline import OFFLINE_FILES, offline_model_path

        if key in OFFLINE_FILES:
            return offline_model_path(key)
        # An enhancer with the offline backend is the learned model, fetched as usual.
        return Path(models_dir) / _spec(key).filename
    spec = _spec(key)
    if backend == "insightface":
        return Path(models_dir) / spec.filename
    if backend == "standin":
        return Path(models_dir) / "standin" / spec.filename
    raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")


def models_for(backend: str, enhancer: str, precision: str) -> dict[str, str]:
    """Role -> model key for one workflow configuration.

    The stand-in backend mirrors the real one key for key, so the rest of the
    pipeline is identical whichever backend is selected.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    if backend == "offline":
        # dlib's HOG detector is built into dlib; the "detector" file is the 68-landmark model
        # it needs next, and there is no swapper file (the classic swap works on pixels).
        chosen = {"detector": "dlib_landmarks_68", "recognizer": "dlib_resnet_v1"}
    else:
        chosen = {
            "detector": "det_10g",
            "recognizer": "w600k_r50",
            "swapper": "inswapper_128_fp16" if precision == "fp16" else "inswapper_128",
        }
    if enhancer != "none":
        spec = MODELS.get(enhancer)
        if spec is None or spec.role != "enhancer":
            known = sorted(k for k, s in MODELS.items() if s.role == "enhancer")
            raise ValueError(f"unknown enhancer {enhancer!r}; expected 'none' or one of {known}")
        chosen["enhancer"] = enhancer
    return chosen


def _spec(key: str) -> ModelSpec:
    try:
        return MODELS[key]
    except KeyError:
        raise KeyError(f"unknown model {key!r}; known: {sorted(MODELS)}") from None


def batched_path(path: str | Path) -> Path:
    """Where the batched copy of a model (facepipe.batching) lives: next to it, never in its place."""
    path = Path(path)
    return path.with_name(f"{path.stem}_batched{path.suffix}")
