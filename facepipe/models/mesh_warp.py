"""The offline backend's dense-mesh swap behind the swapper interface (facepipe.mesh_swap does the
work): the source is the record's crop and its 468 mesh points, each face its frame pixels around
its mesh (crop kind landmark_box)."""

from __future__ import annotations


class MeshWarp:
    batch_size = 1

    def __init__(self, spec, model=None, providers=None, **_):
        self.spec = spec

    def prepare_source(self, record: dict, where: str = "source embedding"):
        from facepipe.mesh_swap import MeshSwapper

        return MeshSwapper.from_source(record, where=where)

    def swap(self, crops: list, args: list[dict], source) -> list:
        """A patch (or None: nothing to paste) per face, from its crop and mesh points."""
        return [source.patch_from_crop(crop, **a) for crop, a in zip(crops, args)]
