"""What every learned swapper shares: the aligned crop in, the swapped crop out, batches of
faces per model call, and pixel boost.

Pixel boost (FaceFusion's): the crop is cut at N times the model's size and swapped as N x N
tiles, tile (i, j) being the crop's pixels [i::N, j::N] (each a whole face at the model's
size), put back in place after the swap. The model sees N^2 slightly shifted views of a sharper
crop, and the result keeps N times the detail of a single pass.
"""

from __future__ import annotations

import numpy as np

from facepipe.media.patches import Patch
from facepipe.models.registry import ModelSpec, crop_size
from facepipe.models.runtime import BatchedSession, create_session, normalized


def implode_pixel_boost(crop: np.ndarray, tiles: int, size: int) -> np.ndarray:
    """A (size*tiles)-square crop as tiles^2 interleaved size-square tiles (FaceFusion's layout)."""
    return crop.reshape(size, tiles, size, tiles, 3).transpose(1, 3, 0, 2, 4).reshape(tiles * tiles, size, size, 3)


def explode_pixel_boost(parts: np.ndarray, tiles: int, size: int) -> np.ndarray:
    """The inverse of implode_pixel_boost."""
    return parts.reshape(tiles, tiles, size, size, 3).transpose(2, 0, 3, 1, 4).reshape(size * tiles, size * tiles, 3)


class AlignedSwapper:
    """A swapper that takes an aligned crop and a source input, bound by name ("target" and
    "source", as FaceFusion binds them), and gives the swapped crop as its first output.

    Subclasses say how a source record becomes the model's "source" input (prepare_source), and
    what the real model's inputs and outputs are and what stands in for it (standin_signature,
    build_standin: facepipe.models.standin).
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
            blob = normalized(np.stack(call)[..., ::-1], self._mean, self._std)
            feed = {"target": np.ascontiguousarray(blob.transpose(0, 3, 1, 2))}
            pred = self.runner.run(feed, {"source": np.repeat(source, len(call), axis=0)})[0][:len(chunk)]
            pred = pred.transpose(0, 2, 3, 1)
            if self.spec.output == "signed":
                pred = pred * self._std + self._mean
            # Truncated, as insightface's INSwapper.get and FaceFusion convert it.
            out.extend(np.clip(pred * 255.0, 0, 255).astype(np.uint8)[..., ::-1])
        n = self.tiles * self.tiles
        return [Patch(kind="eroded_crop",
                      image=np.ascontiguousarray(explode_pixel_boost(np.stack(out[i * n:(i + 1) * n]), self.tiles,
                                                                     self.size)),
                      matrix=np.asarray(a["matrix"], np.float64).reshape(2, 3))
                for i, a in enumerate(args)]


def swapper_standin(g, spec, *, emap: bool = False, mask_output: bool = False) -> None:
    """The stand-in swap (facepipe.models.standin): the target crop with R and B swapped, lower
    contrast, and a colour shift that is a function of the source input; ``emap``: the source goes
    through an emap initializer, the graph's last (inswapper); ``mask_output``: a second output
    "mask" of ones (HyperSwap's)."""
    # lazy: onnx is needed only to build a stand-in, which a real run never does
    from onnx import TensorProto, numpy_helper

    # lazy: the stand-in builder, with onnx, is slow to import, and only this path needs it
    from facepipe.models.standin import SEED

    fp16 = bool(spec.derived_from)  # FaceFusion's fp16 files keep float32 I/O and compute in float16
    rng = np.random.default_rng(SEED + 2)
    colour = rng.standard_normal((512, 3)).astype(np.float32)
    ftype = np.float16 if fp16 else np.float32
    signed = spec.output == "signed"
    if emap:
        # The real inswapper's emap (512x512) is the graph's last initializer; insightface's
        # INSwapper reads graph.initializer[-1]. Added last below.
        emap_matrix = np.linalg.qr(rng.standard_normal((512, 512)))[0].astype(np.float32)
        latent = g.op("MatMul", ["source", "emap"])
    else:
        latent = "source"
    target = "target"
    if signed:
        # Inputs (and outputs) in [-1, 1]: computed on [0, 1] like the others.
        target = g.op("Add", [g.op("Mul", [target, g.const(0.5)]), g.const(0.5)])
    if fp16:
        # FaceFusion's fp16 files keep float32 I/O and compute in float16.
        latent = g.op("Cast", [latent], to=TensorProto.FLOAT16)
        target = g.op("Cast", [target], to=TensorProto.FLOAT16)
    shift = g.op("Mul", [g.op("Tanh", [g.op("MatMul", [latent, g.const(colour, ftype)])]), g.const(0.35, ftype)])
    shift = g.op("Reshape", [shift, g.const([1, 3, 1, 1], np.int64)])
    bgr = g.op("Gather", [target, g.const([2, 1, 0], np.int64)], axis=1)
    mixed = g.op("Add", [g.op("Add", [g.op("Mul", [bgr, g.const(0.8, ftype)]), g.const(0.1, ftype)]), shift])
    clipped = g.op("Clip", [mixed, g.const(0.0, ftype), g.const(1.0, ftype)])
    if fp16:
        clipped = g.op("Cast", [clipped], to=TensorProto.FLOAT)
    if signed:
        clipped = g.op("Sub", [g.op("Mul", [clipped, g.const(2.0)]), g.const(1.0)])
    g.op("Identity", [clipped], "output")
    if mask_output:
        # A mask of ones, the shape of the real model's second output.
        g.op("Add", [g.op("Mul", [g.op("ReduceMean", ["output"], axes=[1], keepdims=1), g.const(0.0)]),
                     g.const(1.0)], "mask")
    if emap:
        g.inits.append(numpy_helper.from_array(emap_matrix, name="emap"))
