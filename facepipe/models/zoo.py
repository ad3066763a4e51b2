"""The router: the class that runs a model, from its registry entry's family.

A new model of a known family is a registry entry only; a new family is one class and one
line here.
"""

from __future__ import annotations

from importlib import import_module

from facepipe.models.registry import backend, spec

# family -> "module:class" (imported only when a model of that family is loaded)
FAMILIES = {
    "inswapper": "facepipe.models.inswapper:InSwapper",
    "hyperswap": "facepipe.models.hyperswap:HyperSwap",
    "classic": "facepipe.models.classic:ClassicSwap",
    "mesh": "facepipe.models.mesh_warp:MeshWarp",
    "restorer": "facepipe.models.face_restorer:FaceRestorer",
    # Mask models on the swapper's aligned crop: what covers a face, and its parts.
    "xseg": "facepipe.models.occluder:Occluder",
    "bisenet": "facepipe.models.face_parser:FaceParser",
    # A backend's detector and recognizer run together, in its analyzer (load_analyzer).
    "scrfd": "facepipe.models.face_analyzer:FaceAnalyzer",
    "arcface": "facepipe.models.face_analyzer:FaceAnalyzer",
    # MediaPipe's detector and its face mesh (the detector's `requires`) run in one analyzer, with
    # dlib's identity model as its recognizer.
    "mediapipe": "facepipe.models.face_mesh:MeshAnalyzer",
    "dlib": "facepipe.models.face_mesh:MeshAnalyzer",
}


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
