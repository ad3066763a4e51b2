"""The code's version is a rerun trigger, per stage (facepipe.workflow.provenance.code_version).

Each rule's code version digests its script and the facepipe modules that script imports,
transitively. Changing one module reruns the stages that use it (and what follows them), no
other: shown on a copy of the workflow that runs its own copy of the package.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.workflow_helpers import REPO, copy_workflow
from tests.workflow_helpers import pin_backend, planned_jobs, snakemake, write_sheet

from facepipe.workflow import provenance
from facepipe.media.ffmpeg import read_result_record

# --- unit: the import analysis -------------------------------------------------------------------


def _package(root: Path, files: dict[str, str]) -> Path:
    """A package `facepipe` under root with the given files (relative path -> source)."""
    for rel, text in files.items():
        path = root / "facepipe" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "facepipe"


def _script(root: Path, text: str) -> Path:
    path = root / "scripts" / "stage.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_imports_are_followed_transitively_inside_functions_relative_and_to_submodules(tmp_path):
    package = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "def f():\n    from facepipe.b import g\n    return g()\n",
        "b.py": "from . import c\nfrom .sub.d import x\n",
        "c.py": "",
        "sub/__init__.py": "",
        "sub/d.py": "from .. import e\nx = 1\n",
        "e.py": "",
        "sub/f.py": "",
        "unused.py": "import facepipe.a\n",
    })
    versions = provenance.CodeVersions(package)
    script = _script(tmp_path, "import json\nfrom facepipe.a import f\n")
    assert versions.modules_of(script) == ["facepipe", "facepipe.a", "facepipe.b", "facepipe.c", "facepipe.e",
                                           "facepipe.sub", "facepipe.sub.d"]
    # `from facepipe import name`: the submodule of that name.
    script = _script(tmp_path, "from facepipe import c\n")
    assert versions.modules_of(script) == ["facepipe", "facepipe.c"]


def test_a_module_importing_by_a_computed_name_brings_its_whole_package(tmp_path):
    package = _package(tmp_path, {
        "__init__.py": "",
        "models/__init__.py": "import importlib\n\ndef load(name):\n"
                              "    return importlib.import_module(f'facepipe.models.{name}')\n",
        "models/one.py": "",
        "models/two.py": "",
        "other.py": "",
    })
    script = _script(tmp_path, "from facepipe.models import load\n")
    assert provenance.CodeVersions(package).modules_of(script) == ["facepipe", "facepipe.models",
                                                                   "facepipe.models.one", "facepipe.models.two"]


def test_the_version_changes_with_the_script_its_modules_and_the_data_they_name_only(tmp_path):
    package = _package(tmp_path, {"__init__.py": "", "a.py": "TABLE = 'table.txt'\n", "b.py": "",
                                  "data/table.txt": "1 2 3\n", "data/other.txt": "x\n"})
    script = _script(tmp_path, "from facepipe.a import TABLE\n")

    def version():
        return provenance.CodeVersions(package).version(script)

    first = version()
    for path, unrelated in ((package / "b.py", True), (package / "data/other.txt", True),
                            (package / "a.py", False), (package / "data/table.txt", False), (script, False)):
        path.write_text(path.read_text() + "# changed\n")
        assert (version() == first) == unrelated, path
        first = version()


def test_the_version_does_not_depend_on_where_the_package_lies(tmp_path):
    files = {"__init__.py": "", "a.py": "x = 1\n"}
    one, two = tmp_path / "one", tmp_path / "two"
    versions = [provenance.CodeVersions(_package(root, files)).version(_script(root, "import facepipe.a\n"))
                for root in (one, two)]
    assert versions[0] == versions[1]


# --- the rules ------------------------------------------------------------------------------------

# fetch_model's output is the file its pinned SHA-256 names, whatever the code that fetched it:
# new code must not download every model again (and so rerun every job that uses one).
NO_CODE_VERSION = {"fetch_model"}


def _rule_blocks():
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=(?:rule|checkpoint) )", smk.read_text()):
            head = re.match(r"(?:rule|checkpoint) (\w+):", block)
            if head:
                yield head.group(1), block


def test_every_rule_with_a_script_takes_the_code_version_of_that_script():
    """A rule runs scripts/RULE.py and takes code=code_version("RULE"): the script named is the
    one digested, and the stage's stamp (same name) holds that version."""
    scripted = set()
    for rule, block in _rule_blocks():
        script = re.search(r'\n    script:\n\s+"\.\./scripts/(\w+)\.py"', block)
        if not script:
            assert "code_version(" not in block, rule
            continue
        scripted.add(rule)
        assert script.group(1) == rule, f"rule {rule} runs scripts/{script.group(1)}.py: name them alike"
        if rule in NO_CODE_VERSION:
            continue
        params = re.search(r"\n    params:\n((?:        .*\n)*)", block)
        assert params and f'        code=code_version("{rule}"),\n' in params.group(1), \
            f"rule {rule} does not take its code version as params.code"
    assert set(provenance.STAGES) <= scripted
    assert NO_CODE_VERSION <= scripted


def test_every_stage_module_is_found_in_the_real_package():
    """Each script's modules include those it imports itself, and the analysis reads every module of
    the package without error (a syntax error would otherwise surface only at plan time)."""
    versions = provenance.CodeVersions()
    for script in sorted((REPO / "scripts").glob("*.py")):
        direct = set(re.findall(r"^(?:from|import) (facepipe[\w.]*)", script.read_text(), re.M))
        assert direct <= set(versions.modules_of(script)), script.name
    assert "facepipe.report.qc" not in versions.modules_of(REPO / "scripts" / "render_segment.py")


def test_stages_that_run_no_model_do_not_depend_on_the_model_registry():
    """Adding a model to the registry must not rerun the stages that read and write video only."""
    versions = provenance.CodeVersions()
    for rule in ("prepare_target", "render_segment", "mux_video", "finalize_image", "cast_sheet"):
        models = [m for m in versions.modules_of(REPO / "scripts" / f"{rule}.py") if m.startswith("facepipe.models")]
        assert not models, f"{rule} imports {models}"


# --- workflow ------------------------------------------------------------------------------------

NAME = "clip"


@pytest.fixture(scope="module")
def own_package(tmp_path_factory, media_dir):
    """A copy of the workflow with its own copy of the package, run once with QC; returns
    (workdir, env). PYTHONPATH makes Snakemake and every rule script import the copy, not the
    package installed (editable) from the repository."""
    wd = copy_workflow(tmp_path_factory.mktemp("codeversion") / "wf")
    shutil.copytree(REPO / "facepipe", wd / "facepipe", ignore=shutil.ignore_patterns("__pycache__"))
    pin_backend(wd, "standin")
    (wd / "inputs").mkdir()
    shutil.copy(media_dir / "silent.mp4", wd / "inputs" / "clip.mp4")
    shutil.copy(media_dir / "astronaut.png", wd / "inputs" / "face.png")
    write_sheet(wd / "config" / "jobs.tsv", [{"name": NAME, "target": "inputs/clip.mp4", "source": "inputs/face.png",
                                              "enhancer": "gfpgan_1.4"}])
    env = {"PYTHONPATH": str(wd)}
    snakemake(wd, "qc", env=env)
    assert planned_jobs(wd, "qc", env=env) == {}
    return wd, env


def _changed(wd: Path, module: str):
    """Append a comment to one module of the copy; returns a function that restores it."""
    path = wd / "facepipe" / module
    text = path.read_text()
    path.write_text(text + "# a change\n")
    return lambda: path.write_text(text)


@pytest.mark.workflow
def test_the_copy_runs_its_own_package(own_package):
    wd, env = own_package
    where = subprocess.run([sys.executable, "-c", "import facepipe; print(facepipe.__file__)"], cwd=wd.parent,
                           env={**os.environ, **env}, capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()).parent == wd / "facepipe"


@pytest.mark.workflow
@pytest.mark.parametrize("module, jobs", [
    # QC only: nothing of the result, the cast or the preview uses it.
    ("report/qc.py", {"qc_report": 1}),
    # The enhancement (the clip's one segment and the preview), and what reads its patches: the
    # render and mux, the preview sheet, and QC (it reads the result). Never detection, tracking,
    # embedding or the swap.
    ("swap/enhance.py", {"enhance_faces": 2, "render_segment": 1, "mux_video": 1, "preview_sheet": 1, "qc_report": 1}),
    # The preview's own stages and the swap and enhancement of its frames only (not of the clip's
    # segment), and QC, which imports the module too.
    ("report/preview.py", {"preview_plan": 1, "swap_faces": 1, "enhance_faces": 1, "preview_sheet": 1, "qc_report": 1}),
])
def test_changing_one_module_reruns_the_stages_that_use_it_and_no_others(own_package, module, jobs):
    wd, env = own_package
    restore = _changed(wd, module)
    try:
        planned = planned_jobs(wd, "qc", env=env)
    finally:
        restore()
    assert planned == {**jobs, "qc": 1}
    assert planned_jobs(wd, "qc", env=env) == {}


@pytest.mark.workflow
def test_without_snakemakes_metadata_the_stamps_rerun_exactly_those_stages(own_package):
    """The stamps alone (no .snakemake/, so no params trigger) rerun the changed stage and what
    follows, and the result's record names the stage's new code version."""
    wd, env = own_package
    before = json.loads(read_result_record(wd / "results" / f"{NAME}.mp4"))
    shutil.rmtree(wd / ".snakemake")
    restore = _changed(wd, "swap/enhance.py")
    try:
        proc = snakemake(wd, "qc", env=env)
        ran = set(re.findall(r"^(?:local)?rule (\w+):", proc.stdout + proc.stderr, re.M))
        after = json.loads(read_result_record(wd / "results" / f"{NAME}.mp4"))
        assert planned_jobs(wd, "qc", env=env) == {}
    finally:
        restore()
    assert ran - {"qc"} == {"enhance_faces", "render_segment", "mux_video", "preview_sheet", "qc_report"}
    changed = {stage for stage in before["code"] if before["code"][stage] != after["code"][stage]}
    assert changed == {"enhance_faces"}
    # Restoring the module is a change too: the stages run again, with the code of before.
    snakemake(wd, "qc", env=env)
    assert json.loads(read_result_record(wd / "results" / f"{NAME}.mp4"))["code"] == before["code"]


def test_a_runs_job_processes_reuse_its_code_versions_and_nothing_else_does(tmp_path, monkeypatch):
    """The main process of a run saves the versions; a job's own process reads them instead of
    reading every module again, and a workflow with other scripts (or another package) computes
    its own. Nothing goes through the environment, and only `save` writes the cache."""
    from facepipe.workflow import provenance

    environ = dict(os.environ)
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    cache = tmp_path / "code_versions.json"
    first = provenance.rule_code_versions(scripts, cache)
    assert not cache.exists()  # a dry run, --report, a job's process: read only
    assert first["swap_faces"] == provenance.code_version(scripts / "swap_faces.py")
    provenance.rule_code_versions(scripts, cache, save=True)  # the run's main process
    stored = json.loads(cache.read_text())
    stored["versions"]["swap_faces"] = "from-the-main-process"
    cache.write_text(json.dumps(stored))
    provenance._RULE_VERSIONS.clear()  # a job's own process starts with nothing
    assert provenance.rule_code_versions(scripts, cache)["swap_faces"] == "from-the-main-process"
    other = tmp_path / "scripts"
    other.mkdir()
    (other / "swap_faces.py").write_text("import facepipe.swap.segment\n")
    assert provenance.rule_code_versions(other, cache)["swap_faces"] != "from-the-main-process"
    assert dict(os.environ) == environ


def test_the_code_versions_cache_is_used_only_while_no_file_changed(tmp_path, monkeypatch):
    """A saved set of versions is taken only when every script and package file has the size
    and time it had; an edited module gives a new version at once."""
    from facepipe.workflow import provenance

    scripts = tmp_path / "scripts"
    scripts.mkdir()
    script = scripts / "swap_faces.py"
    script.write_text("import facepipe.swap.segment\n")
    cache = tmp_path / "cache.json"
    first = provenance.rule_code_versions(scripts, cache, save=True)
    assert cache.is_file()
    saved = json.loads(cache.read_text())
    saved["versions"]["swap_faces"] = "from-the-cache"
    cache.write_text(json.dumps(saved))
    provenance._RULE_VERSIONS.clear()
    assert provenance.rule_code_versions(scripts, cache)["swap_faces"] == "from-the-cache"
    provenance._RULE_VERSIONS.clear()
    script.write_text("import facepipe.swap.segment  # edited\n")
    assert provenance.rule_code_versions(scripts, cache)["swap_faces"] not in ("from-the-cache", first["swap_faces"])


def test_a_module_the_router_names_is_part_of_the_code_that_uses_it():
    """facepipe.models.zoo imports each family's class from a "module:Class" string at run time:
    the swap's code version must still cover those modules (and the swaps they call)."""
    from facepipe.workflow.provenance import CodeVersions

    modules = CodeVersions().modules_of(Path(__file__).resolve().parents[1] / "scripts" / "swap_faces.py")
    assert {"facepipe.models.inswapper", "facepipe.models.hyperswap", "facepipe.models.mesh_warp",
            "facepipe.models.mesh_swap", "facepipe.models.classic_swap"} <= set(modules)
    render = CodeVersions().modules_of(Path(__file__).resolve().parents[1] / "scripts" / "render_segment.py")
    assert "facepipe.models.zoo" not in render and "facepipe.models.mesh_swap" not in render
