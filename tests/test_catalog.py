"""The Snakemake workflow catalog's conventions: config/README.md describes every configuration
key as the schema has it, the catalog's usage file says what it must, and a licence is there."""

import importlib.util
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("config_readme", REPO / "tools" / "config_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_readme_is_the_declaration():
    text = (REPO / "config" / "README.md").read_text()
    assert text == _tool().readme(), "config/README.md is stale: run python tools/config_readme.py"
    schema = yaml.safe_load((REPO / "config" / "schemas" / "config.schema.yaml").read_text())
    for key in schema["properties"]:
        assert f"| `{key}` |" in text


def test_every_configuration_key_is_described():
    from facepipe.workflow.options import OPTIONS

    bare = [option.name for option in OPTIONS if not option.help.strip()]
    assert not bare, f"options without help text (config/README.md and README.md show it): {bare}"


def test_catalog_usage_file():
    usage = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert usage["report"] is True
    assert usage["software-stack-deployment"]["conda"] is True
    assert (REPO / "envs" / "facepipe.yaml").is_file()
    assert {"desc", "flags"} <= set(usage["mandatory-flags"])


def test_licence_is_mit():
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
