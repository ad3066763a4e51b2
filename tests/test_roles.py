"""The names of the embedding roles come from one helper (facepipe.faces.roles)."""

import re
from pathlib import Path

import pytest

from facepipe.faces import roles
from facepipe.workflow.jobs import face_images, swap_roles

REPO = Path(__file__).resolve().parents[1]


def test_role_names_round_trip():
    assert roles.map_source(2) == "map2" and roles.map_reference(0) == "mapref0"
    assert roles.parse("mapref12") == ("mapref", 12)
    assert roles.parse("map3") == ("map", 3)
    assert roles.parse("source") == ("source", None)
    for bad in ("map", "mapref", "source1", "target", "maps"):
        assert not roles.is_role(bad)
        with pytest.raises(ValueError):
            roles.parse(bad)
    for role in ("source", "reference", "map0", "mapref7"):
        assert re.fullmatch(roles.PATTERN, role)
    assert [r for r in ("source", "reference", "map0", "mapref0") if roles.is_swap_source(r)] == ["source", "map0"]
    assert roles.describe("mapref1") == "map entry 2's reference photo"
    assert roles.describe("target") == "target"


def test_a_jobs_roles():
    job = {"source": "", "reference": "", "faces": "one", "map": "1=a.jpg;r.jpg=b.jpg"}
    assert face_images(job) == {"map0": "a.jpg", "map1": "b.jpg", "mapref1": "r.jpg"}
    assert swap_roles(job) == ["map0", "map1", "mapref1"]
    assert swap_roles({"source": "s.jpg", "reference": "r.jpg", "faces": "reference", "map": ""}) == \
        ["source", "reference"]


def test_role_names_are_built_only_by_the_helper():
    """No module, rule or script spells a map role itself (f"map{i}", "mapref", startswith("map"))."""
    spelled = re.compile(r"""f["']map(ref)?\{|startswith\(["']map|["']mapref""")
    files = [*(REPO / "facepipe").rglob("*.py"), *(REPO / "scripts").glob("*.py"), *(REPO / "rules").glob("*.smk")]
    found = [f"{path.relative_to(REPO)}:{n}" for path in files if path.name != "roles.py"
             for n, line in enumerate(path.read_text().splitlines(), 1) if spelled.search(line)]
    assert not found, f"embedding role names built outside facepipe.faces.roles: {found}"
