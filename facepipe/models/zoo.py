"""The router: the class that runs a model, from its registry entry's family
(facepipe.models.registry.FAMILIES).

A new model of a known family is a registry entry only; a new family is one module (its class,
which also says what stands in for its model: facepipe.models.standin) and its entries in the
registry (tests/test_model_registry_workflow.py adds one to a copy of the package and runs a job).
"""

from __future__ import annotations

from importlib import import_module

from facepipe.models.registry import FAMILIES, backend, spec


def family_class(family: str):
    try:
        module, name = FAMILIES[family].split(":")
    except KeyError:
        raise ValueError(f"no class runs model family {family!r}; known: {sorted(FAMILIES)}") from None
    return getattr(import_module(module), name)


def load(key: str, path=None, providers: list[str] | None = None, **kwargs):
    """A swapper, enhancer, occluder or face parser, ready to run: the class of its family on its file."""
    s = spec(key)
    return family_class(s.family)(s, path, providers or [], **kwargs)


def load_analyzer(backend_name: str, detector, recognizer, providers: list[str], *, threads: int = 0,
                  embed: bool = True, **learned_kwargs):
    """The face analyzer of a backend (detection, keypoints, identity): the class of its
    detector's family, on the job's providers. ``learned_kwargs`` (precision, det_size) are the
    learned analyzer's; an analyzer they do not apply to accepts and ignores them."""
    cls = family_class(spec(backend(backend_name).detector).family)
    return cls(detector, recognizer, providers, threads=threads, embed=embed, **learned_kwargs)
