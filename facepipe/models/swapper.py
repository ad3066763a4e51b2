"""What every learned swapper shares: the aligned crop in, the swapped crop out, batches of
faces per model call, and pixel boost.

Pixel boost (FaceFusion's): the crop is cut at N times the model's size and swapped as N x N
tiles, tile (i, j) being the crop's pixels [i::N, j::N] (each a whole face at the model's
size), put back in place after the swap. The model sees N^2 slightly shifted views of a sharper
crop, and the result keeps N times the detail of a single pass.
"""

from __future__ import annotations

import numpy as np

from facepipe.models.registry import ModelSpec, crop_size
from facepipe.media.patches import Patch
from facepipe.models.runtime import BatchedSession, create_session


def implode_pixel_boost(crop: np.ndarray, tiles: int, size: int) -> np.ndarray:
    """A (size*tiles)-square crop as tiles^2 interleaved size-square tiles (FaceFusion's layout)."""
    return crop.reshape(size, tiles, size, tiles, 3).transpose(1, 3, 0, 2, 4).reshape(tiles * tiles, size, size, 3)


def explode_pixel_boost(parts: np.ndarray, tiles: int, size: int) -> np.ndarray:
    """The inverse of implode_pixel_boost."""
    return parts.reshape(tiles, tiles, size, size, 3).transpose(2, 0, 3, 1, 4).reshape(size * tiles, size * tiles, 3)


class AlignedSwapper:
    """A swapper that takes an aligned crop and a source input, bound by name ("target" and
    "source", as FaceFusion binds them), and gives the swapped crop as its first output.

    Subclasses say how a source record becomes the model's "source" input (prepare_source).
    """

    def __init__(self, spec: ModelSpec, model, providers: list[str], *, precision: str = "fp32", threads: int = 0,
                 batch_size: int = 1, io_binding: bool | None = None, pixel_boost: int = 0,
                 shape_transfer: int | None = None):
        # shape_transfer is the offline mesh swap's (facepipe.models.mesh_swap): a learned swapper makes
        # the face from the source's identity vector and takes no shape from the source's mesh.
        self.spec = spec
        self.model = str(model)
        self.size = spec.size
        self.crop_size = crop_size(spec.key, pixel_boost)
        self.tiles = self.crop_size // self.size
        session = create_session(model, providers, precision=precision, threads=threads)
        self.runner = BatchedSession(session, batch_size, name=str(model), io_binding=io_binding)
        names = [i.name for i in session.get_inputs()]
        if set(names) != {"target", "source"}:
            raise ValueError(f"{model}: inputs {names}, but a {spec.family} swapper takes 'target' and 'source'")
        self._mean = np.asarray(spec.mean, np.float32)
        self._std = np.asarray(spec.std, np.float32)

    @property
    def batch_size(self) -> int:
        """Faces per model call (a pixel-boosted face is tiles^2 calls' worth)."""
        return max(1, self.runner.size // (self.tiles * self.tiles))

    def prepare_source(self, record: dict) -> np.ndarray:
        raise NotImplementedError

    def swap(self, crops: list[np.ndarray], args: list[dict], source: np.ndarray) -> list[Patch]:
        """Swapped faces for aligned crops (crop_size square, BGR) with their frame -> crop
        matrices in ``args``; all tiles of all faces go through the model a batch at a time."""
        for crop in crops:
            if crop.shape[:2] != (self.crop_size, self.crop_size):
                raise ValueError(f"{self.spec.key} takes {self.crop_size} px crops, "
                                 f"got {crop.shape[1]}x{crop.shape[0]}")
        tiles = [t for crop in crops for t in implode_pixel_boost(crop, self.tiles, self.size)]
        out = []
        for chunk, call in self.runner.batches(tiles):
            blob = ((np.stack(call)[..., ::-1].astype(np.float32) / 255.0 - self._mean) / self._std)
            feed = {"target": np.ascontiguousarray(blob.transpose(0, 3, 1, 2))}
            pred = self.runner.run(feed, {"source": np.repeat(source, len(call), axis=0)})[0][:len(chunk)]
            pred = pred.transpose(0, 2, 3, 1)
            if self.spec.output == "signed":
                pred = pred * self._std + self._mean
            # Truncated, as insightface's INSwapper.get and FaceFusion convert it.
            out.extend(np.clip(pred * 255.0, 0, 255).astype(np.uint8)[..., ::-1])
        n = self.tiles * self.tiles
        return [Patch(kind="inswapper",
                      image=np.ascontiguousarray(explode_pixel_boost(np.stack(out[i * n:(i + 1) * n]), self.tiles,
                                                                     self.size)),
                      matrix=np.asarray(a["matrix"], np.float64).reshape(2, 3))
                for i, a in enumerate(args)]
