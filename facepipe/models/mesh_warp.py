"""The offline backend's dense-mesh swap behind the swapper interface (facepipe.mesh_swap does the
work): the source is the record's crop and its 468 mesh points, each face its frame pixels around
its mesh (crop kind landmark_box)."""

from __future__ import annotations

from facepipe.models.classic import ClassicSwap


class MeshWarp(ClassicSwap):
    def swapper_class(self):
        from facepipe.mesh_swap import MeshSwapper

        return MeshSwapper
