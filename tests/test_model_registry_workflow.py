"""Every registered swapper and enhancer runs through the workflow (stand-ins), with and without
pixel boost; and adding a model is one registry entry, named by no other file of the product."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from facepipe.media.demo import insightface_image
from facepipe.models import LEARNED, MODELS, crop_size, offered
from facepipe.media.patches import read_patches
from tests.workflow_helpers import planned_jobs, snakemake, standin_job

REPO = Path(__file__).resolve().parents[1]
# What the product is made of: a model's key may appear in the registry only.
PRODUCT_FILES = ["Snakefile", "rules", "scripts", "facepipe", "config", "envs", "profiles"]


def _jobs() -> list[dict]:
    rows = []
    for key in offered("swapper", LEARNED):
        size = MODELS[key].size
        for boost in (0, 2 * size):
            rows.append({"name": f"{key}-boost{boost}", "swapper": key, "pixel_boost": boost, "enhancer": "none"})
    for key in offered("enhancer", LEARNED):
        # Each enhancer after a plain and after a boosted swap (its crop is its own either way).
        for boost in (0, 256):
            rows.append({"name": f"enhance-{key}-boost{boost}", "swapper": "", "pixel_boost": boost, "enhancer": key})
    return [{"target": "inputs/t1.png", "source": "inputs/source.png", "faces": "many", **row} for row in rows]


@pytest.fixture(scope="module")
def every_model(tmp_path_factory):
    from skimage import data

    inputs = tmp_path_factory.mktemp("inputs")
    # A small still keeps each job quick: the point is the wiring of every model, not its speed.
    t1 = cv2.resize(cv2.imread(str(insightface_image("t1.jpg"))), (480, 270))
    cv2.imwrite(str(inputs / "t1.png"), t1)
    cv2.imwrite(str(inputs / "source.png"), data.astronaut()[:, :, ::-1])
    rows = _jobs()
    wd = standin_job(tmp_path_factory.mktemp("registry") / "wf", {"t1.png": inputs / "t1.png",
                                                                    "source.png": inputs / "source.png"}, rows[0])
    from tests.workflow_helpers import write_sheet

    write_sheet(wd / "config" / "jobs.tsv", rows)
    snakemake(wd, timeout=1500)
    return wd, rows, t1


def test_every_swapper_and_enhancer_runs_with_and_without_pixel_boost(every_model):
    wd, rows, t1 = every_model
    assert len(rows) == 2 * len(offered("swapper", LEARNED)) + 2 * len(offered("enhancer", LEARNED))
    for row in rows:
        name = row["name"]
        result = cv2.imread(str(wd / "results" / f"{name}.png"))
        assert result is not None and result.shape == t1.shape, name
        changed = np.abs(result.astype(int) - t1.astype(int)).sum(axis=2) > 0
        assert 0 < changed.mean() < 0.5, name  # the face changed, the frame around it did not
        swapped = read_patches(wd / "work" / name / "swapped" / "seg_0000.parquet")
        key = row["swapper"] or "inswapper_128"
        side = crop_size(key, row["pixel_boost"])
        assert swapped and all(p.image.shape[:2] == (side, side) for ps in swapped.values() for p in ps), name
        log = (wd / "logs" / name / "swap_faces" / "seg_0000.log").read_text()
        assert f"stands in for {key}" in log, name
        if row["enhancer"] != "none":
            enhanced = read_patches(wd / "work" / name / "enhanced" / "seg_0000.parquet")
            size = MODELS[row["enhancer"]].size
            restored = [p for ps in enhanced.values() for p in ps if p.kind == "feathered_crop"]
            assert restored and all(p.image.shape[:2] == (size, size) for p in restored), name


def test_pixel_boost_keeps_more_detail_than_one_pass(every_model):
    """A boosted swap is cut at twice the side, so the pasted face holds twice the detail."""
    wd, _, t1 = every_model
    side = {}
    for boost in (0, 256):
        patches = read_patches(wd / "work" / f"inswapper_128-boost{boost}" / "swapped" / "seg_0000.parquet")
        side[boost] = next(iter(patches.values()))[0].image.shape[0]
    assert side == {0: 128, 256: 256}


def test_changing_the_swapper_or_its_boost_reruns_detection_onwards_not_the_plan(every_model):
    wd, rows, _ = every_model
    name = rows[0]["name"]
    jobs = planned_jobs(wd, f"results/{name}.png", "--config", "pixel_boost=256")
    # The sheet's own value wins over the config default, so nothing changes for this job...
    assert jobs == {}
    from tests.workflow_helpers import write_sheet

    changed = [dict(r, pixel_boost=256) if r["name"] == name else r for r in rows]
    write_sheet(wd / "config" / "jobs.tsv", changed)
    try:
        jobs = planned_jobs(wd, f"results/{name}.png")
    finally:
        write_sheet(wd / "config" / "jobs.tsv", rows)
    assert jobs.get("detect_faces") == 1 and jobs.get("swap_faces") == 1
    assert "prepare_target" not in jobs and "embed_face" not in jobs


def _files_naming(key: str) -> list[str]:
    pattern = re.compile(rf"(?<![A-Za-z0-9_.]){re.escape(key)}(?![A-Za-z0-9_])")
    hits = []
    for part in PRODUCT_FILES:
        root = REPO / part
        for path in ([root] if root.is_file() else root.rglob("*")):
            if path.is_file() and path.suffix in ("", ".py", ".smk", ".yaml", ".yml", ".tsv") \
                    and path.name != "registry.py" and pattern.search(path.read_text(errors="ignore")):
                hits.append(str(path.relative_to(REPO)))
    return hits


@pytest.mark.parametrize("key", sorted(k for k, s in MODELS.items() if s.role in ("swapper", "enhancer")))
def test_no_product_file_but_the_registry_names_a_swapper_or_enhancer(key):
    assert _files_naming(key) == []


def test_adding_a_model_is_one_registry_entry(tmp_path):
    """A copy of the product with one more entry in the registry (a second 256 px HyperSwap):
    its stand-in is built from the entry, the sheet may choose it, and the job runs."""
    from tests.workflow_helpers import copy_workflow

    wd = copy_workflow(tmp_path / "wf")
    shutil.copytree(REPO / "facepipe", wd / "facepipe")
    registry = wd / "facepipe" / "models" / "registry.py"
    text = registry.read_text()
    anchor = "    # ---- enhancers"
    entry = ('    ModelSpec(key="hyperswap_9z_256", role="swapper", family="hyperswap", '
             'filename="hyperswap_9z_256.onnx", url=_ff("models-9.9.9", "hyperswap_9z_256.onnx"), '
             'sha256="' + "ab" * 32 + '", licence="test entry", sources=("one", "two"), **_SWAPPER_256),\n')
    assert anchor in text
    registry.write_text(text.replace(anchor, entry + anchor, 1))
    (wd / "inputs").mkdir()
    cv2.imwrite(str(wd / "inputs" / "t1.png"), cv2.resize(cv2.imread(str(insightface_image("t1.jpg"))), (480, 270)))
    from skimage import data

    cv2.imwrite(str(wd / "inputs" / "source.png"), data.astronaut()[:, :, ::-1])
    from tests.workflow_helpers import pin_backend

    pin_backend(wd, "standin")
    env = {"PYTHONPATH": str(wd)}  # the copy's package, with the new entry
    snakemake(wd, "--config", "target=inputs/t1.png", "source=inputs/source.png", "swapper=hyperswap_9z_256",
              env=env)
    assert (wd / "resources" / "models" / "standin" / "hyperswap_9z_256.onnx").is_file()
    assert "stands in for hyperswap_9z_256" in (wd / "logs" / "t1" / "swap_faces" / "seg_0000.log").read_text()
    assert (wd / "results" / "t1.png").is_file()


# A new family of swappers, as its own module: the class that runs it (a learned swapper of
# aligned crops, like HyperSwap) and what stands in for its model.
NEW_FAMILY_MODULE = '''"""A toy family for the test that adds a family: a 128 px swapper taking the unit embedding."""

from __future__ import annotations

import numpy as np

from facepipe.models.swapper import AlignedSwapper, swapper_standin


class ToySwap(AlignedSwapper):
    @staticmethod
    def standin_signature(spec):
        from facepipe.models.standin import ModelSignature, TensorSig, image_signature

        return ModelSignature((TensorSig("source", "float32", (1, 512)), image_signature("target", spec.size)),
                              (image_signature("output", spec.size),))

    @staticmethod
    def build_standin(graph, spec) -> None:
        swapper_standin(graph, spec)

    def prepare_source(self, record: dict) -> np.ndarray:
        embedding = np.asarray(record["embedding"], np.float32).reshape(1, -1)
        return (embedding / np.linalg.norm(embedding)).astype(np.float32)
'''


def _tree(root):
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*.py")}


def test_adding_a_family_is_one_new_module_and_its_registry_entry(tmp_path):
    """A copy of the product with one more model family: one new module (its class and stand-in)
    and the registry's lines for it, nothing else. Its stand-in is built, the sheet may choose
    it, and the job runs it."""
    from tests.workflow_helpers import copy_workflow, pin_backend

    wd = copy_workflow(tmp_path / "wf")
    shutil.copytree(REPO / "facepipe", wd / "facepipe", ignore=shutil.ignore_patterns("__pycache__"))
    (wd / "facepipe" / "models" / "toy_swap.py").write_text(NEW_FAMILY_MODULE)
    registry = wd / "facepipe" / "models" / "registry.py"
    text = registry.read_text()
    family_anchor, model_anchor = "FAMILIES = {\n", "    # ---- enhancers"
    assert family_anchor in text and model_anchor in text
    text = text.replace(family_anchor, family_anchor + '    "toyswap": "facepipe.models.toy_swap:ToySwap",\n', 1)
    entry = ('    ModelSpec(key="toyswap_128", role="swapper", family="toyswap", filename="toyswap_128.onnx", '
             'url=_ff("models-9.9.9", "toyswap_128.onnx"), sha256="' + "cd" * 32 + '", licence="test entry", '
             'sources=("one", "two"), template="arcface_128", size=128),\n')
    registry.write_text(text.replace(model_anchor, entry + model_anchor, 1))
    before, after = _tree(REPO / "facepipe"), _tree(wd / "facepipe")
    changed = sorted(str(p) for p in set(before) | set(after) if before.get(p) != after.get(p))
    assert changed == ["models/registry.py", "models/toy_swap.py"]

    (wd / "inputs").mkdir()
    cv2.imwrite(str(wd / "inputs" / "t1.png"), cv2.resize(cv2.imread(str(insightface_image("t1.jpg"))), (480, 270)))
    from skimage import data

    cv2.imwrite(str(wd / "inputs" / "source.png"), data.astronaut()[:, :, ::-1])
    pin_backend(wd, "standin")
    snakemake(wd, "--config", "target=inputs/t1.png", "source=inputs/source.png", "swapper=toyswap_128",
              env={"PYTHONPATH": str(wd)})
    assert (wd / "resources" / "models" / "standin" / "toyswap_128.onnx").is_file()
    assert "stands in for toyswap_128" in (wd / "logs" / "t1" / "swap_faces" / "seg_0000.log").read_text()
    assert (wd / "results" / "t1.png").is_file()
