"""Tiny, deterministic stand-ins for the real face models.

The real weights are licence-restricted and hundreds of MB, and cannot be
fetched on CI or offline machines. These graphs have exactly the real models'
input/output names, shapes and element types (see ``SIGNATURES``), so every
line of the pipeline (insightface's SCRFD / ArcFaceONNX / INSwapper classes,
our ONNX Runtime session code, the Snakemake rules) runs unchanged on them.

They are NOT face models and say so: each carries
``metadata_props = {"facepipe_standin": "true", "real_model": <key>}`` and a
doc string, and ``facepipe.models.runtime`` logs a warning whenever one is loaded.

Behaviour, chosen so that end-to-end tests can check something meaningful:

* detector: one face centred in the *input tensor*, box side 40 % of the
  tensor's smaller side, five keypoints from insightface's ``arcface_dst``
  template scaled into the box; score = MAD/(MAD+0.02) where MAD is the mean
  absolute deviation of the input, so a flat (e.g. black) frame has score 0
  and no detection while any real photo scores well above 0.5.
* recognizer: fixed-seed random projection of the mean-centred 14x14
  average-pooled crop: same crop -> same embedding, different crops ->
  different embeddings.
* swapper: target crop with R/B swapped, contrast 0.8, plus a per-channel
  colour shift that is a function of the source latent; output in [0, 1].
* enhancer: a gentle 3x3 sharpen, clipped to [-1, 1].
* occluder (XSeg): 1 inside a fixed ellipse where the aligned face is, 0 outside it and
  on dark pixels (mean of the channels at most 0.08, fading out by 0.16), as if a dark
  object covered the face.
* face parser (BiSeNet): logits of one fixed face layout (``parser_label_map``: skin,
  brows, eyes, nose, lips, mouth, ears, hair, neck), whatever the input.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from facepipe.models import LEARNED, MODELS
from facepipe.models.zoo import family_class

log = logging.getLogger(__name__)

OPSET = 17
# IR 8 is the first IR that carries opset 17 and is read by every ONNX Runtime
# release we may meet (the installed 1.31 reads up to a much newer IR).
IR_VERSION = 8

_ELEM = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "float64": TensorProto.DOUBLE,
         "int64": TensorProto.INT64}

Dim = int | str  # int: fixed size; str: symbolic dim_param


@dataclass(frozen=True)
class TensorSig:
    """One graph input or output: name, element type, shape (symbolic dims as str)."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    @property
    def elem_type(self) -> int:
        return _ELEM[self.dtype]


@dataclass(frozen=True)
class ModelSignature:
    inputs: tuple[TensorSig, ...]
    outputs: tuple[TensorSig, ...]


# The signatures of the real published files, and the graphs that stand in for them, live with
# each family's class (its standin_signature and build_standin), sized from the registry entry.
# FP16 copies keep float32 inputs and outputs (keep_io_types), as FaceFusion's FP16 files do.
def image_signature(name: str, size: int) -> TensorSig:
    """An NCHW float32 image of one face, side ``size``."""
    return TensorSig(name, "float32", (1, 3, size, size))


def signature(spec) -> ModelSignature:
    """The inputs and outputs of the real model of a registry entry: its family's class says."""
    return _family_class(spec).standin_signature(spec)


def _family_class(spec):
    """The class that runs the entry's family, which also says what stands in for its model (the
    one family dispatch: facepipe.models.zoo)."""

    cls = family_class(spec.family)
    if not hasattr(cls, "build_standin"):
        raise KeyError(f"no stand-in for model family {spec.family!r} ({spec.key})")
    return cls


SEED = 20240617  # fixed so stand-ins are byte-for-byte reproducible


class Graph:
    """Small builder: unique node names, constants as initializers.

    Node names are prefixed ``standin_`` on purpose: insightface's ArcFaceONNX
    decides the input normalisation by looking for node names starting with
    "Sub"/"Mul" among the first 8 nodes (mxnet exports) and must not trip.
    """

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def const(self, value, dtype=np.float32, name: str | None = None) -> str:
        self._n += 1
        name = name or f"standin_c{self._n}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name=name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        self._n += 1
        out = output or f"standin_t{self._n}_{op_type.lower()}"
        name = f"standin_{op_type.lower()}_{self._n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out


def standin_keys() -> list[str]:
    """Every model that has a stand-in: the learned ones (the offline models are real files
    shipped in packages, or code)."""

    return sorted(k for k, s in MODELS.items() if s.group == LEARNED and s.filename)


def _signatures() -> dict[str, ModelSignature]:
    return {key: signature(MODELS[key]) for key in standin_keys()}


# key -> the real model's inputs and outputs, for every model with a stand-in.
SIGNATURES: dict[str, ModelSignature] = _signatures()


def value_info(sig: TensorSig) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(sig.name, sig.elem_type, list(sig.shape))


def make_standin(key: str) -> onnx.ModelProto:
    """Build (in memory) the stand-in for model ``key`` (facepipe.models registry key)."""

    if key not in standin_keys():
        raise KeyError(f"no stand-in for {key!r}; available: {standin_keys()}")
    spec = MODELS[key]
    sig = signature(spec)
    g = Graph()
    _family_class(spec).build_standin(g, spec)
    graph = helper.make_graph(
        g.nodes,
        f"facepipe_standin_{key}",
        [value_info(s) for s in sig.inputs],
        [value_info(s) for s in sig.outputs],
        initializer=g.inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="facepipe.models.standin",
        doc_string=(
            f"STAND-IN for {key}: a tiny deterministic graph with the real model's "
            "inputs and outputs. It does not detect, recognise, swap or enhance faces."
        ),
    )
    helper.set_model_props(model, {"facepipe_standin": "true", "real_model": key})
    onnx.checker.check_model(model, full_check=True)
    return model


def build_standin(key: str, dest: str | Path) -> Path:
    """Write the stand-in for ``key`` to ``dest`` atomically and return ``dest``.

    Atomic (temp file in the same folder + os.replace) so a parallel Snakemake
    job never loads a half-written model.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    data = make_standin(key).SerializeToString()
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("wrote STAND-IN model %s for %s (%d bytes)", dest, key, len(data))
    return dest


def main(argv: list[str] | None = None) -> int:
    """``python -m facepipe.models.standin KEY DEST`` (or ``all DIR``)."""
    parser = argparse.ArgumentParser(description="Build a stand-in ONNX model (not a real face model).")
    parser.add_argument("key", choices=[*standin_keys(), "all"])
    parser.add_argument("dest", type=Path, help="output file, or a folder when KEY is 'all'")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.key == "all":
        # lazy: imported only on the path that needs it
        from facepipe.models import MODELS

        for key in standin_keys():
            build_standin(key, args.dest / MODELS[key].filename)
    else:
        build_standin(args.key, args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
