"""The names of a job's embedding roles, in one place: each face photo a job reads has a role,
which names its embedding file (work/{name}/embeddings/{role}.npz), its rule input and its
provenance input.

- ``source``: the photo whose face is put in;
- ``reference``: the photo of the person to replace (faces=reference);
- ``map{i}``: map entry i's source photo;
- ``mapref{i}``: map entry i's reference photo (an entry given by a reference photo).

No imports: the Snakefile's wildcard constraints and every rule script may use it cheaply.
"""

from __future__ import annotations

import re

SOURCE = "source"
REFERENCE = "reference"
MAP = "map"
MAP_REFERENCE = "mapref"
# A role, as a regular expression (the rules' wildcard constraint).
PATTERN = rf"{SOURCE}|{REFERENCE}|{MAP}\d+|{MAP_REFERENCE}\d+"
_ROLE = re.compile(rf"(?P<kind>{SOURCE}|{REFERENCE}|{MAP_REFERENCE}|{MAP})(?P<index>\d*)")


def map_source(i: int) -> str:
    """The role of map entry i's source photo."""
    return f"{MAP}{i}"


def map_reference(i: int) -> str:
    """The role of map entry i's reference photo."""
    return f"{MAP_REFERENCE}{i}"


def parse(role: str) -> tuple[str, int | None]:
    """(kind, map entry index): ('source', None), ('reference', None), ('map', i), ('mapref', i)."""
    match = _ROLE.fullmatch(role)
    if not match or bool(match["index"]) != (match["kind"] in (MAP, MAP_REFERENCE)):
        raise ValueError(f"not an embedding role: {role!r}")
    return match["kind"], int(match["index"]) if match["index"] else None


def is_role(role: str) -> bool:
    try:
        parse(role)
    except ValueError:
        return False
    return True


def from_map(role: str) -> bool:
    """Whether the role is one of the map's photos (map{i} or mapref{i})."""
    return is_role(role) and parse(role)[0] in (MAP, MAP_REFERENCE)


def is_swap_source(role: str) -> bool:
    """Whether the swap takes a face from the role's photo: the source or a map entry's source,
    not a reference photo (reference, mapref{i}), which only finds a person."""
    return is_role(role) and parse(role)[0] in (SOURCE, MAP)


def describe(role: str) -> str:
    """How a role is named to the user: 'map0' is "map entry 1's source photo" (any other name,
    such as 'target', as it is)."""
    if not is_role(role):
        return role
    kind, index = parse(role)
    if kind == MAP_REFERENCE:
        return f"map entry {index + 1}'s reference photo"
    if kind == MAP:
        return f"map entry {index + 1}'s source photo"
    return kind
