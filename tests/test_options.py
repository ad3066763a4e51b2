"""Every option is declared once (facepipe/workflow/options.py): the schemas, the README tables, the jobs
sheet's columns and the stage map are made from that declaration, and config/config.yaml is
checked against it. Adding an option is one entry there (plus the code that uses it)."""

import dataclasses
import re
import runpy
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest
import yaml

from facepipe.workflow import jobs, options, provenance
from facepipe.models import BACKENDS

REPO = Path(__file__).resolve().parents[1]


def _tool():
    """tools/config_readme.py, the generator, as a namespace."""
    return SimpleNamespace(**runpy.run_path(str(REPO / "tools" / "config_readme.py")))


def test_generated_files_are_the_declaration():
    """The schemas, config/README.md and README.md's option table are exactly what the tool makes."""
    stale = [str(path.relative_to(REPO)) for path, text in _tool().generated().items() if path.read_text() != text]
    assert not stale, f"stale: {stale}; run python tools/config_readme.py"


def test_config_yaml_has_every_key_with_its_declared_default():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    declared = options.defaults()
    assert set(config) == set(declared), (f"config.yaml lacks {sorted(set(declared) - set(config))}, "
                                          f"has undeclared {sorted(set(config) - set(declared))}")
    differ = {k: (config[k], declared[k]) for k in config if config[k] != declared[k]}
    assert not differ, f"config.yaml's defaults differ from facepipe/workflow/options.py's (config, declared): {differ}"


def test_defaults_fit_the_schemas():
    schema = options.config_schema()
    jsonschema.validators.validator_for(schema)(schema).validate(options.defaults())
    sheet = options.jobs_schema()
    jsonschema.validators.validator_for(sheet).check_schema(sheet)


def test_backends_come_from_the_registry():
    backend = options.by_name()["backend"]
    assert options.allowed(backend) == ("auto", *sorted(BACKENDS))
    for schema in (options.config_schema()["definitions"]["options"], options.jobs_schema()["properties"]):
        assert schema["backend"]["enum"] == ["auto", *sorted(BACKENDS)]


def test_the_code_reads_the_declaration():
    assert jobs.OPTION_KEYS == options.sheet_keys()
    assert provenance.STAGES == options.stage_map()
    assert set(provenance.INPUT_FILES) == {"target", "source", "reference"}
    assert set(provenance.GLOBAL_SETTINGS) == {"degrade", "min_free_gpu_mb"}


def test_every_declared_stage_is_a_rule():
    rules = set()
    for path in [REPO / "Snakefile", *(REPO / "rules").glob("*.smk")]:
        rules |= set(re.findall(r"^(?:rule|checkpoint) (\w+):", path.read_text(), re.M))
    assert set(options.STAGE_NAMES) <= rules, set(options.STAGE_NAMES) - rules
    assert set(options.TYPES) >= {o.type for o in options.OPTIONS}


def test_an_unknown_stage_is_an_error():
    bad = (*options.OPTIONS, options.Option("knob", "integer", 1, "a knob", stages=("swap_face",)))
    with pytest.raises(ValueError, match="option 'knob': unknown stages"):
        options.stage_map(bad)


def test_adding_an_option_is_one_entry():
    """A new option in a copy of the declaration reaches both schemas, the sheet's columns and how
    its cells are read, the stage map and both tables; and the kept-equal checks fail until the
    files are made again."""
    knob = options.Option("grain", "list", [1, 2], "film grain, per channel", stages=("render_segment",),
                          item="number", length=2, unique=False, minimum=0, maximum=10)
    added = (*options.OPTIONS, knob)

    config = options.config_schema(added)
    assert config["properties"]["grain"] == {"$ref": "#/definitions/options/grain"}
    assert config["definitions"]["options"]["grain"]["items"] == {"type": "number", "minimum": 0, "maximum": 10}
    assert "grain" in config["required"]
    cell = options.jobs_schema(added)["properties"]["grain"]
    assert re.fullmatch(cell["pattern"], "1.5,3") and not re.fullmatch(cell["pattern"], "1,2,3")

    assert "grain" in options.sheet_keys(added)
    assert "grain" in options.keys_of_type("list", added) and "grain" in options.text_columns(added)
    assert options.stage_map(added)["render_segment"][-1] == "grain"
    assert options.defaults(added)["grain"] == [1, 2]

    tool = _tool()
    row = tool.table(added).splitlines()[-1]
    assert row.startswith("| `grain` | list of numbers 0–10 | `[1, 2]` | yes | render_segment | film grain")
    made = tool.generated(added)
    stale = {path.name for path, text in made.items() if path.read_text() != text}
    assert stale == {"config.schema.yaml", "jobs.schema.yaml", "README.md"}  # both README.md files

    # A job option stays a job option when only its scope changes, and a run option leaves the sheet.
    run_only = dataclasses.replace(knob, scope=options.RUN)
    assert "grain" not in options.jobs_schema((*options.OPTIONS, run_only))["properties"]
    assert "grain" not in options.sheet_keys((*options.OPTIONS, run_only))


def test_a_sheet_list_of_numbers_is_read_as_numbers(tmp_path):
    sheet = tmp_path / "jobs.tsv"
    sheet.write_text("name\ttarget\tsource\tmask_padding\tface_mask\nx\ta.mp4\tb.png\t0,0,10,0\tbox,mouth\n")
    job = jobs.build_jobs(options.defaults(), jobs.read_sheet(sheet))["x"]
    assert job["mask_padding"] == [0.0, 0.0, 10.0, 0.0] and job["face_mask"] == ["box", "mouth"]


def test_declared_values_are_the_ones_the_code_knows():
    """Values the code that uses an option defines itself: the declaration must name the same."""
    from facepipe.gpu import DEGRADE_STEPS
    from facepipe.swap.masks import MASK_REGIONS, MASK_TYPES
    from facepipe.models import PRECISIONS
    from facepipe.models.runtime import PROVIDER_NAMES

    declared = {name: options.allowed(option) for name, option in options.by_name().items()}
    assert declared["face_mask"] == tuple(MASK_TYPES)
    assert declared["mask_regions"] == tuple(MASK_REGIONS)
    assert declared["degrade"] == tuple(DEGRADE_STEPS)
    assert set(declared["precision"]) == set(PRECISIONS)
    assert set(declared["providers"]) == set(PROVIDER_NAMES)
