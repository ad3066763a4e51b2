"""The offline backend's dense-mesh swap behind the swapper interface (facepipe.models.mesh_swap does the
work): the source is the record's crop and its 468 mesh points, each face its frame pixels around
its mesh (crop kind landmark_box). ``shape_transfer`` (0-100; None: facepipe.models.mesh_swap's default)
is how far each target face's shape moves towards the source's."""

from __future__ import annotations

from facepipe.models.classic import ClassicSwap
from facepipe.models.mesh_swap import SHAPE_TRANSFER, MeshSwapper


class MeshWarp(ClassicSwap):
    def __init__(self, spec, model=None, providers=None, *, shape_transfer: int | None = None, **_):
        super().__init__(spec, model, providers)
        self.shape_transfer = shape_transfer

    def swapper_class(self):
        return MeshSwapper

    def prepare_source(self, record: dict, where: str = "source embedding"):
        shape_transfer = SHAPE_TRANSFER if self.shape_transfer is None else int(self.shape_transfer)
        return self.swapper_class().from_source(record, where=where, shape_transfer=shape_transfer)
