"""Which persons of a job are swapped, and with which source: decided per person, for the whole video.

- ``faces=one``: the person with the largest screen presence (the sum of their face areas over
  every frame), on every frame where that person is tracked, and nobody else.
- ``faces=many``: every person.
- ``faces=reference``: every person whose identity, taken over all their tracks (the median
  distance of their identity samples to the reference), is under ``reference_threshold``.
- ``map``: a source per person, by cast id (``1=alice.jpg``) or by a reference photo
  (``ref_a.jpg=alice.jpg``: the persons that match it, as for faces=reference; a person matching
  several takes the nearest). Persons not in the map are left alone; ``faces`` is not used.

The persons (facepipe.faces.tracking) come from the tracking stage, so changing any of this reruns
the swap and what follows, never detection or tracking.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

SOURCE = "source"  # the job's own source, for faces=one|many|reference


class MapError(ValueError):
    """A map option that cannot be read."""


@dataclass(frozen=True)
class MapEntry:
    """One entry of a job's map: the persons it names (a cast id, or a reference photo) and the
    source photo they get."""

    source: str
    person: int | None = None
    reference: str | None = None

    @property
    def key(self) -> str:
        return f"person {self.person}" if self.person is not None else f"reference {self.reference}"


def parse_map(value) -> list[MapEntry]:
    """A map option: ``1=alice.jpg;3=bob.jpg`` / ``ref_a.jpg=alice.jpg`` (entries split on ``;``,
    each split on its first ``=``; text outside a path is stripped), or a mapping (YAML config).
    An empty value is no map."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    if isinstance(value, dict):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        pairs = [(str(k), str(v)) for k, v in value]
    else:
        pairs = []
        for part in str(value).split(";"):
            if not part.strip():
                continue
            if "=" not in part:
                raise MapError(f"map entry {part.strip()!r} has no '=': write person=source, e.g. "
                               f"1=alice.jpg or ref_a.jpg=alice.jpg")
            left, right = part.split("=", 1)
            pairs.append((left.strip(), right.strip()))
    entries, seen = [], set()
    for left, right in pairs:
        if not left or not right:
            raise MapError(f"map entry {left!r}={right!r}: both sides are needed (person=source)")
        entry = (MapEntry(right, person=int(left)) if re.fullmatch(r"\d+", left)
                 else MapEntry(right, reference=left))
        if entry.person is not None and entry.person < 1:
            raise MapError(f"map entry {left}={right}: cast ids start at 1")
        if entry.key in seen:
            raise MapError(f"map names {entry.key} twice")
        seen.add(entry.key)
        entries.append(entry)
    return entries


def map_text(entries: list[MapEntry]) -> str:
    """The canonical text of a map (what the job's settings and the result's record hold)."""
    return ";".join(f"{e.person if e.person is not None else e.reference}={e.source}" for e in entries)


def person_distance(person: dict, reference: np.ndarray, metric: str) -> float | None:
    """The median distance of a person's identity samples to a reference embedding (None: the
    person has no sample)."""
    # Imported here: the workflow reads maps (parse_map) while it plans, without the tracker.
    from facepipe.faces.tracking import distance

    samples = person.get("identity") or []
    if not samples:
        return None
    return float(np.median([distance(s, reference, metric) for s in samples]))


def choose(persons: list[dict], *, mode: str, metric: str, threshold: float,
           reference: np.ndarray | None = None, entries: list[MapEntry] | None = None,
           references: dict[str, np.ndarray] | None = None) -> dict[int, str]:
    """person id -> the key of its source: SOURCE, or a map entry's key. Persons not in it stay."""
    if entries:
        return _by_map(persons, entries, references or {}, metric, threshold)
    if not persons or mode == "many":
        return {p["person"]: SOURCE for p in persons}
    if mode == "one":
        top = max(persons, key=lambda p: (p["presence"], -p["person"]))
        return {top["person"]: SOURCE}
    if mode == "reference":
        if reference is None:
            raise ValueError("faces=reference needs a reference embedding")
        chosen = {}
        for p in persons:
            d = person_distance(p, reference, metric)
            log.info("person %d: median identity distance %s to the reference (threshold %.3f)", p["person"],
                     "unknown (no identity sample)" if d is None else f"{d:.3f}", threshold)
            if d is not None and d < threshold:
                chosen[p["person"]] = SOURCE
        return chosen
    raise ValueError(f"unknown faces mode {mode!r}")


def _by_map(persons, entries, references, metric, threshold) -> dict[int, str]:
    ids = {p["person"] for p in persons}
    chosen = {}
    for entry in entries:
        if entry.person is not None:
            if entry.person in ids:
                chosen[entry.person] = entry.key
            else:
                log.warning("map: person %d is not in the cast (persons %s); that entry swaps nobody",
                            entry.person, sorted(ids))
    by_reference = [e for e in entries if e.reference is not None]
    for p in persons:
        if p["person"] in chosen or not by_reference:
            continue
        scored = [(person_distance(p, references[e.key], metric), e) for e in by_reference]
        scored = [(d, e) for d, e in scored if d is not None and d < threshold]
        if scored:
            d, entry = min(scored, key=lambda de: de[0])
            chosen[p["person"]] = entry.key
            log.info("map: person %d matches %s (median distance %.3f)", p["person"], entry.reference, d)
    for entry in by_reference:
        if entry.key not in chosen.values():
            log.warning("map: no person matches the reference %s (threshold %.3f); that entry swaps nobody",
                        entry.reference, threshold)
    return chosen
