"""The offline backend's classic swap behind the swapper interface (facepipe.models.classic_swap does
the work): the source is the record's crop and landmarks, each face its frame pixels."""

from __future__ import annotations

from facepipe.models.classic_swap import ClassicSwapper


class ClassicSwap:
    """An offline swap that works on pixels (facepipe.models.classic_swap.PixelSwapper); a subclass
    gives its own PixelSwapper in ``swapper_class``."""

    batch_size = 1

    def __init__(self, spec, model=None, providers=None, **_):
        self.spec = spec

    def swapper_class(self):
        return ClassicSwapper

    def prepare_source(self, record: dict, where: str = "source embedding"):
        return self.swapper_class().from_source(record, where=where)

    def swap(self, crops: list, args: list[dict], source) -> list:
        """A patch (or None: nothing to paste) per face, from its crop and points."""
        return [source.patch_from_crop(crop, **a) for crop, a in zip(crops, args)]
