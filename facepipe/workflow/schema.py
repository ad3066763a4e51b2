"""The JSON schemas of the configuration and of the jobs sheet (config/schemas/): each read once per
process, and a value that breaks one told in one line naming the key, the value and what is allowed."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.lru_cache(maxsize=None)
def _read_schema(schema_path: str) -> dict:
    # lazy: the Snakefile imports this module while it parses, so it loads only what it uses
    import yaml

    # PyYAML's C loader where it is built: the config schema in 1.6 ms instead of 15.
    return yaml.load(Path(schema_path).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def read_schema(schema_path: str | Path) -> dict:
    """A JSON schema file (YAML), read once per process: every snakemake command, and on a cluster
    every job's, checks the configuration against it twice and each row of a jobs sheet once
    (6.4 ms a row when each read the file again). The same dict each time: not to be changed."""
    return _read_schema(str(Path(schema_path).resolve()))


@functools.lru_cache(maxsize=None)
def _validator(schema_path: str):
    # lazy: jsonschema is slow to import, and only this path needs it
    import jsonschema

    schema = _read_schema(schema_path)
    return jsonschema.validators.validator_for(schema)(schema)


def schema_problem(instance: dict, schema_path: str | Path, where: str) -> str | None:
    """The first way instance breaks the JSON schema, as one line naming the key, the value and the
    values allowed (jsonschema's own report is seven lines of schema internals); None when it fits.
    where: how the user names the place ('configuration key', "jobs sheet 'x.tsv' row 2, column")."""
    # lazy: jsonschema is slow to import, and only this path needs it
    import jsonschema

    validator = _validator(str(Path(schema_path).resolve()))
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is None:
        return None
    path = [str(p) for p in error.absolute_path]
    if not path:
        return f"{where}: {error.message}"
    key, value = path[0], instance.get(path[0])
    return f"{where} {key!r}: {value!r} is not allowed; {_allowed(error)}"


def _allowed(error) -> str:
    """What a failed schema keyword allows, in words."""
    keyword, rule = error.validator, error.validator_value
    if keyword == "enum":
        return f"allowed values: {', '.join(map(str, rule))}"
    if keyword in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        low = error.schema.get("minimum", error.schema.get("exclusiveMinimum"))
        high = error.schema.get("maximum", error.schema.get("exclusiveMaximum"))
        above = "above" if "exclusiveMinimum" in error.schema else "at least"
        number = "a whole number" if error.schema.get("type") == "integer" else "a number"
        if low is not None and high is not None:
            return f"allowed: {number} from {low} to {high}" + (
                f" (above {low})" if "exclusiveMinimum" in error.schema else "")
        return f"allowed: {number} {above} {low}" if low is not None else f"allowed: {number} up to {high}"
    if keyword == "type":
        kinds = rule if isinstance(rule, list) else [rule]
        words = {"integer": "a whole number", "number": "a number", "string": "text", "boolean": "true or false",
                 "array": "a list, e.g. [a,b]", "object": "a mapping", "null": "empty"}
        return f"allowed: {' or '.join(words.get(k, k) for k in kinds)}"
    if keyword == "pattern":
        return f"allowed: text matching {rule}"
    if keyword == "uniqueItems":
        return "allowed: a list without repeats"
    if keyword == "minItems":
        return f"allowed: a list of at least {rule} item(s)"
    return f"the schema says: {error.message}"
