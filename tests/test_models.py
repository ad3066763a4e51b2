"""The registry is what the download and the workflow trust; check it is sane."""

import re
from pathlib import Path

import pytest

from facepipe.models import MODELS, ROLES, model_path, models_for

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def test_every_model_is_well_formed():
    assert set(MODELS) == {"det_10g", "w600k_r50", "inswapper_128", "inswapper_128_fp16", "gfpgan_1.4"}
    for key, spec in MODELS.items():
        assert spec.key == key
        assert spec.role in ROLES
        assert spec.filename.endswith(".onnx")
        assert spec.url.startswith("https://")
        assert spec.licence
        for sha in spec.accepted_sha256:
            assert HEX64.match(sha), (key, sha)
        if spec.archive:
            assert spec.archive_member and spec.url == spec.archive


def test_pinned_hashes():
    # Unpinned models must be a deliberate, documented exception.
    assert [k for k, s in MODELS.items() if not s.pinned] == ["inswapper_128_fp16"]
    assert MODELS["inswapper_128"].also_accept == (
        "e4a3f08c753cb72d04e10aa0f7dbe3deebbf39567d4ead6dce08e98aa49e16af",
    )


def test_model_path_per_backend():
    assert model_path("inswapper_128", "insightface") == Path("resources/models/inswapper_128.onnx")
    assert model_path("det_10g", "standin", "m") == Path("m/standin/det_10g.onnx")
    with pytest.raises(ValueError):
        model_path("det_10g", "torch")
    with pytest.raises(KeyError):
        model_path("nope", "insightface")


def test_models_for():
    assert models_for("insightface", "none", "fp32") == {
        "detector": "det_10g",
        "recognizer": "w600k_r50",
        "swapper": "inswapper_128",
    }
    chosen = models_for("standin", "gfpgan_1.4", "fp16")
    assert chosen["swapper"] == "inswapper_128_fp16"
    assert chosen["enhancer"] == "gfpgan_1.4"
    for bad in (("x", "none", "fp32"), ("insightface", "codeformer", "fp32"), ("insightface", "none", "int8")):
        with pytest.raises(ValueError):
            models_for(*bad)
