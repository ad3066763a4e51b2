"""The registry is what the download and the workflow trust; check it is sane."""

import re
from pathlib import Path

import pytest

from facepipe.models.alignment import TEMPLATES
from facepipe.models import (BACKENDS, LEARNED, MODELS, ROLES, crop_kind, crop_size, model_path, models_for, offered,
                             works_on_pixels)
from facepipe.models.zoo import FAMILIES

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def test_every_model_is_well_formed():
    for key, spec in MODELS.items():
        assert spec.key == key
        assert spec.role in ROLES
        assert spec.family in FAMILIES, key
        assert spec.licence, key
        for sha in spec.accepted_sha256:
            assert HEX64.match(sha), (key, sha)
        if spec.archive:
            assert spec.archive_member and spec.url == spec.archive
        if spec.group == LEARNED:
            assert spec.filename.endswith(".onnx") and spec.url.startswith("https://"), key
        if spec.role in ("swapper", "enhancer") and spec.filename and spec.group == LEARNED:
            assert spec.template in TEMPLATES and spec.size in (128, 256, 512, 1024, 2048), key
            assert spec.output in ("unit", "signed") and len(spec.mean) == len(spec.std) == 3, key
        for needed in spec.requires:
            assert needed in MODELS, (key, needed)


def test_every_offered_download_is_pinned_by_two_sources():
    """A model whose SHA-256 is not confirmed by two independent public sources is not offered;
    the only unpinned learned models are the FP16 copies the workflow makes itself."""
    for key, spec in MODELS.items():
        if spec.group != LEARNED:
            continue
        if spec.derived_from:
            assert not spec.pinned and MODELS[spec.derived_from].pinned, key
            continue
        assert spec.pinned and len(set(spec.sources)) >= 2, key
    assert MODELS["inswapper_128"].also_accept == ("e4a3f08c753cb72d04e10aa0f7dbe3deebbf39567d4ead6dce08e98aa49e16af",)


def test_the_swappers_and_enhancers_users_asked_for_are_offered():
    assert {"inswapper_128", "hyperswap_1a_256", "hyperswap_1b_256", "hyperswap_1c_256"} <= set(offered("swapper"))
    assert {"gfpgan_1.4", "codeformer", "gpen_bfr_512", "restoreformer_plus_plus"} <= set(offered("enhancer"))
    # SimSwap's embedding converter has no published SHA-256: not offered (docs/models.md).
    assert not any(k.startswith("simswap") for k in MODELS)


def test_model_path_per_backend():
    assert model_path("inswapper_128", "insightface") == Path("resources/models/inswapper_128.onnx")
    assert model_path("det_10g", "standin", "m") == Path("m/standin/det_10g.onnx")
    assert model_path("dlib_resnet_v1", "offline").is_file()  # inside an installed package
    with pytest.raises(ValueError):
        model_path("det_10g", "torch")
    with pytest.raises(KeyError):
        model_path("nope", "insightface")
    with pytest.raises(ValueError, match="code, not a file"):
        model_path(BACKENDS["offline"].default_swapper, "offline")


def test_models_for():
    assert models_for("insightface", "none", "fp32") == {
        "detector": "det_10g",
        "recognizer": "w600k_r50",
        "swapper": "inswapper_128",
    }
    chosen = models_for("standin", "gfpgan_1.4", "fp16")
    assert chosen["swapper"] == "inswapper_128_fp16"
    assert chosen["enhancer"] == "gfpgan_1.4"
    assert models_for("insightface", "none", "fp16", "hyperswap_1b_256")["swapper"] == "hyperswap_1b_256_fp16"
    assert models_for("offline", "none", "fp16")["swapper"] == BACKENDS["offline"].default_swapper
    for bad in (("x", "none", "fp32"), ("insightface", "codeformer2", "fp32"), ("insightface", "none", "int8"),
                ("offline", "none", "fp32", "hyperswap_1a_256"),
                ("insightface", "none", "fp32", BACKENDS["offline"].default_swapper)):
        with pytest.raises(ValueError):
            models_for(*bad)


def test_crop_kinds_and_pixel_boost():
    assert crop_kind("inswapper_128") == "aligned:arcface_128:128"
    assert crop_kind("hyperswap_1a_256", 512) == "aligned:arcface_128:512"
    assert crop_kind(BACKENDS["offline"].default_swapper, 512) == "landmark_box"
    # The offline swaps work on the frame's pixels (their swap jobs take worker processes); the learned ones do not.
    assert works_on_pixels(BACKENDS["offline"].default_swapper) and works_on_pixels("landmark_warp")
    assert not works_on_pixels("inswapper_128") and not works_on_pixels("hyperswap_1a_256")
    assert crop_size("inswapper_128", 384) == 384
    for bad in (100, 192, 64):
        with pytest.raises(ValueError, match="multiple"):
            crop_size("inswapper_128" if bad != 192 else "hyperswap_1a_256", bad)


def test_every_backend_names_models_of_its_own_group():
    for name, b in BACKENDS.items():
        for key in (b.detector, b.recognizer, b.default_swapper):
            assert MODELS[key].group == b.group, (name, key)


def test_the_documented_model_table_is_the_registrys():
    """Each model's licence and the sources that confirm its hash, as the registry has them."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tools" / "model_table.py"
    module_spec = importlib.util.spec_from_file_location("model_table", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    readme = (path.parents[1] / "docs" / "models.md").read_text()
    assert module.table() in readme, "docs/models.md's model table is stale: paste the output of tools/model_table.py"
    for key, spec in MODELS.items():
        if not spec.derived_from:
            assert f"| `{key}` |" in readme and spec.licence.replace("|", "\\|") in readme, key
