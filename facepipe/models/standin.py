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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

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


def _det_outputs() -> tuple[TensorSig, ...]:
    # SCRFD order: scores for strides 8/16/32, then bboxes, then keypoints.
    names = {"score": ("448", "471", "494"), "bbox": ("451", "474", "497"), "kps": ("454", "477", "500")}
    widths = {"score": 1, "bbox": 4, "kps": 10}
    return tuple(TensorSig(n, "float32", ("?", widths[kind])) for kind in ("score", "bbox", "kps") for n in names[kind])


# Signatures of the real published files, by model family, sized from the registry entry
# (facepipe.models.registry). Sources: insightface's own model-loading log lines
# ("det_10g.onnx detection [1, 3, '?', '?']", "w600k_r50.onnx recognition ['None', 3, 112,
# 112]"), SCRFD's fixed output names used across many projects, and FaceFusion's inference
# code, which binds the swappers' inputs by name ("target", "source") and the restorers' as
# "input" (CodeFormer also "weight", a double), and reads the first output. HyperSwap's second
# output (a face mask) is as third-party loaders describe it; nothing here reads it. FP16
# copies keep float32 inputs and outputs (keep_io_types), as FaceFusion's FP16 files do.
def _image(name: str, size: int) -> TensorSig:
    return TensorSig(name, "float32", (1, 3, size, size))


def signature(spec) -> ModelSignature:
    """The inputs and outputs of the real model of a registry entry."""
    return _family(spec).signature(spec)


# insightface.utils.face_align.arcface_dst: the 5-point template of a 112x112
# ArcFace crop (left eye, right eye, nose, left mouth, right mouth).
ARCFACE_DST = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)

DET_BOX_FRACTION = 0.4  # face box side / smaller side of the detector input
DET_MAD_HALF = 0.02  # MAD at which the detector score is exactly 0.5
_SEED = 20240617  # fixed so stand-ins are byte-for-byte reproducible
# The occluder stand-in's face: an ellipse (centre x, y, semi-axes x, y as fractions of the crop)
# around where the arcface_128 template puts the face; a pixel whose mean of the channels (in
# [0, 1]) is at most OCCLUDER_DARK covers it, one at twice that or brighter does not.
OCCLUDER_ELLIPSE = (0.5, 0.56, 0.36, 0.42)
OCCLUDER_DARK = 0.08
PARSER_CLASSES = 19
# The parser stand-in's layout on an arcface_128 crop: (CelebAMask-HQ class, ellipse centre x,
# y, semi-axes x, y), painted in this order. Eyes and mouth sit on the template's keypoints.
PARSER_LAYOUT = (
    (17, (0.50, 0.16, 0.40, 0.16)),  # hair
    (14, (0.50, 0.98, 0.16, 0.10)),  # neck
    (7, (0.14, 0.50, 0.04, 0.09)),  # l_ear
    (8, (0.86, 0.50, 0.04, 0.09)),  # r_ear
    (1, (0.50, 0.55, 0.34, 0.42)),  # skin
    (2, (0.36, 0.33, 0.09, 0.025)),  # l_brow (the image's left)
    (3, (0.64, 0.33, 0.09, 0.025)),  # r_brow
    (4, (0.3617, 0.4039, 0.07, 0.035)),  # l_eye
    (5, (0.6370, 0.4024, 0.07, 0.035)),  # r_eye
    (10, (0.50, 0.54, 0.06, 0.09)),  # nose
    (12, (0.50, 0.70, 0.115, 0.022)),  # u_lip
    (13, (0.50, 0.745, 0.115, 0.026)),  # l_lip
    (11, (0.50, 0.722, 0.09, 0.012)),  # mouth
)


class _Graph:
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


def _detector(g: _Graph) -> None:
    x = "input.1"
    # Face score from image "flatness", so empty frames give no detection; measured on every
    # 8th pixel, so that the stand-in costs next to nothing (benchmarks measure the overhead).
    sample = g.op("Slice", [x, g.const([0, 0], np.int64), g.const([2**31 - 1, 2**31 - 1], np.int64),
                            g.const([2, 3], np.int64), g.const([8, 8], np.int64)])
    mean = g.op("ReduceMean", [sample], keepdims=1)
    mad = g.op("ReduceMean", [g.op("Abs", [g.op("Sub", [sample, mean])])], keepdims=0)
    score = g.op("Div", [mad, g.op("Add", [mad, g.const(DET_MAD_HALF)])])

    shape = g.op("Shape", [x])
    h_i = g.op("Gather", [shape, g.const(2, np.int64)], axis=0)
    w_i = g.op("Gather", [shape, g.const(3, np.int64)], axis=0)
    h_f = g.op("Cast", [h_i], to=TensorProto.FLOAT)
    w_f = g.op("Cast", [w_i], to=TensorProto.FLOAT)
    half = g.const(0.5)
    cx = g.op("Mul", [w_f, half])
    cy = g.op("Mul", [h_f, half])
    side = g.op("Mul", [g.op("Min", [h_f, w_f]), g.const(DET_BOX_FRACTION)])
    half_side = g.op("Mul", [side, half])
    x0 = g.op("Sub", [cx, half_side])
    y0 = g.op("Sub", [cy, half_side])
    x1 = g.op("Add", [cx, half_side])
    y1 = g.op("Add", [cy, half_side])
    # Keypoints: the ArcFace template mapped onto the box, shape [1, 5].
    tmpl = ARCFACE_DST / 112.0
    kx = g.op("Add", [g.op("Mul", [g.const(tmpl[None, :, 0]), side]), x0])
    ky = g.op("Add", [g.op("Mul", [g.const(tmpl[None, :, 1]), side]), y0])

    ax1 = g.const([1], np.int64)
    ax2 = g.const([2], np.int64)
    zero_f = g.const(0.0)
    names = {8: ("448", "451", "454"), 16: ("471", "474", "477"), 32: ("494", "497", "500")}
    for stride, (score_name, bbox_name, kps_name) in names.items():
        s_i = g.const(stride, np.int64)
        inv_s = g.const(1.0 / stride)
        hs = g.op("Div", [h_i, s_i])
        ws = g.op("Div", [w_i, s_i])
        two = g.const(2, np.int64)
        n = g.op("Mul", [g.op("Mul", [hs, ws]), two])
        idx = g.op("Range", [g.const(0, np.int64), n, g.const(1, np.int64)])
        cell = g.op("Div", [idx, two])  # two anchors per location, same centre
        col = g.op("Mod", [cell, ws])
        row = g.op("Div", [cell, ws])
        s_f = g.const(float(stride))
        ax = g.op("Mul", [g.op("Cast", [col], to=TensorProto.FLOAT), s_f])
        ay = g.op("Mul", [g.op("Cast", [row], to=TensorProto.FLOAT), s_f])

        # Every anchor decodes to the same box; only one anchor gets a score.
        dists = [
            g.op("Mul", [g.op("Sub", [ax, x0]), inv_s]),
            g.op("Mul", [g.op("Sub", [ay, y0]), inv_s]),
            g.op("Mul", [g.op("Sub", [x1, ax]), inv_s]),
            g.op("Mul", [g.op("Sub", [y1, ay]), inv_s]),
        ]
        g.op("Concat", [g.op("Unsqueeze", [d, ax1]) for d in dists], bbox_name, axis=1)

        ax_col = g.op("Unsqueeze", [ax, ax1])
        ay_col = g.op("Unsqueeze", [ay, ax1])
        kdx = g.op("Unsqueeze", [g.op("Mul", [g.op("Sub", [kx, ax_col]), inv_s]), ax2])
        kdy = g.op("Unsqueeze", [g.op("Mul", [g.op("Sub", [ky, ay_col]), inv_s]), ax2])
        pairs = g.op("Concat", [kdx, kdy], axis=2)  # [N, 5, 2] -> x0,y0,x1,y1,...
        g.op("Reshape", [pairs, g.const([-1, 10], np.int64)], kps_name)

        if stride == 32:
            # The anchor nearest the centre on the coarsest level, as a real
            # SCRFD would fire for a large face.
            target = g.op(
                "Mul",
                [g.op("Add", [g.op("Mul", [g.op("Div", [hs, two]), ws]), g.op("Div", [ws, two])]), two],
            )
            onehot = g.op("Cast", [g.op("Equal", [idx, target])], to=TensorProto.FLOAT)
            scores = g.op("Mul", [onehot, score])
        else:
            scores = g.op("Mul", [g.op("Cast", [idx], to=TensorProto.FLOAT), zero_f])
        g.op("Unsqueeze", [scores, ax1], score_name)


def _recognizer(g: _Graph) -> None:
    rng = np.random.default_rng(_SEED + 1)
    pooled = g.op("AveragePool", ["input.1"], kernel_shape=[8, 8], strides=[8, 8])  # [N, 3, 14, 14]
    flat = g.op("Flatten", [pooled], axis=1)  # [N, 588]
    # Centring makes the embedding describe the crop's pattern, not its
    # overall brightness, so two different faces do not look alike.
    centred = g.op("Sub", [flat, g.op("ReduceMean", [flat], axes=[1], keepdims=1)])
    proj = (rng.standard_normal((588, 512)) / np.sqrt(588)).astype(np.float32)
    g.op("MatMul", [centred, g.const(proj)], "683")


def _swapper(g: _Graph, spec, fp16: bool) -> None:
    rng = np.random.default_rng(_SEED + 2)
    colour = rng.standard_normal((512, 3)).astype(np.float32)
    ftype = np.float16 if fp16 else np.float32
    signed = spec.output == "signed"
    if spec.family == "inswapper":
        # The real inswapper's emap (512x512) is the graph's last initializer; insightface's
        # INSwapper reads graph.initializer[-1]. Added last below.
        emap = np.linalg.qr(rng.standard_normal((512, 512)))[0].astype(np.float32)
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
    if spec.family == "hyperswap":
        # A mask of ones, the shape of the real model's second output.
        g.op("Add", [g.op("Mul", [g.op("ReduceMean", ["output"], axes=[1], keepdims=1), g.const(0.0)]),
                     g.const(1.0)], "mask")
    if spec.family == "inswapper":
        g.inits.append(numpy_helper.from_array(emap, name="emap"))


def _enhancer(g: _Graph, spec) -> None:
    a = 0.15
    k = np.array([[0, -a, 0], [-a, 1 + 4 * a, -a], [0, -a, 0]], dtype=np.float32)
    weight = np.repeat(k[None, None], 3, axis=0)  # depthwise: [3, 1, 3, 3]
    sharp = g.op("Conv", ["input", g.const(weight)], group=3, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    for name in spec.extra_inputs:
        # A fidelity weight (CodeFormer's): 1 keeps the input, 0 sharpens fully.
        w = g.op("Cast", [name], to=TensorProto.FLOAT)
        sharp = g.op("Add", [sharp, g.op("Mul", [g.op("Sub", ["input", sharp]), w])])
    g.op("Clip", [sharp, g.const(-1.0), g.const(1.0)], "output")


def _occluder(g: _Graph, spec) -> None:
    """An ellipse where the aligned face is, less every dark pixel: 1 = face visible, 0 = covered.

    Dark pixels stand for an object in front of the face, so a test can put one there and see
    the occlusion mask reach the paste; the real XSeg learns what covers a face instead."""
    side = spec.size
    centre = (np.arange(side, dtype=np.float32) + 0.5) / side
    x, y = np.meshgrid(centre, centre)
    cx, cy, ax, ay = OCCLUDER_ELLIPSE
    inside = ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0
    ellipse = inside.astype(np.float32)[None, :, :, None]  # NHWC, like the real model's output
    brightness = g.op("ReduceMean", ["input"], axes=[3], keepdims=1)  # [N, H, W, 1]
    lit = g.op("Clip", [g.op("Mul", [g.op("Sub", [brightness, g.const(OCCLUDER_DARK)]), g.const(1.0 / OCCLUDER_DARK)]),
                        g.const(0.0), g.const(1.0)])
    g.op("Mul", [lit, g.const(ellipse)], "output")


def parser_label_map(side: int) -> np.ndarray:
    """The stand-in parser's classes on a ``side`` px arcface_128 crop (CelebAMask-HQ ids): a
    face ellipse of skin with brows, eyes, nose, lips and mouth where the template puts them,
    hair above, ears beside, neck below; background elsewhere. No glasses."""
    centre = (np.arange(side, dtype=np.float32) + 0.5) / side
    x, y = np.meshgrid(centre, centre)
    labels = np.zeros((side, side), np.uint8)
    for label, (cx, cy, ax, ay) in PARSER_LAYOUT:  # later parts are painted over earlier ones
        labels[((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0] = label
    return labels


def _parser(g: _Graph, spec) -> None:
    """Logits of a fixed face layout (parser_label_map), whatever the input: the layout is made
    at 1/8 of the model's size and scaled up (nearest), which keeps the file small."""
    coarse = parser_label_map(spec.size // 8)
    logits = (np.eye(PARSER_CLASSES, dtype=np.float32)[coarse] * 10.0).transpose(2, 0, 1)[None]
    full = g.op("Resize", [g.const(logits), "", g.const([1.0, 1.0, 8.0, 8.0])], mode="nearest")
    # + 0 * the input's mean: one layout per input image, for any batch.
    per_image = g.op("Mul", [g.op("ReduceMean", ["input"], axes=[1, 2, 3], keepdims=1), g.const(0.0)])
    g.op("Add", [full, per_image], "output")


@dataclass(frozen=True)
class _StandinFamily:
    """What a model family's stand-in is: the real model's signature, and the graph that stands in."""

    signature: Callable[[object], ModelSignature]
    build: Callable[[_Graph, object], None]


def _mask_image(name: str, size: int, layout: str) -> TensorSig:
    return TensorSig(name, "float32", ("batch", size, size, 3) if layout == "nhwc" else ("batch", 3, size, size))


# The one family dispatch of the stand-ins (a model of a known family is one registry entry).
# The mask models' signatures: FaceFusion's face_masker binds their input as "input" and reads
# the first output; XSeg takes NHWC BGR in [0, 1] and gives [N, H, W, 1], BiSeNet takes NCHW
# and gives 19 class logits; both have a free batch. The output's name is not bound by anyone:
# "output" here.
_FAMILIES: dict[str, _StandinFamily] = {
    "scrfd": _StandinFamily(
        lambda s: ModelSignature((TensorSig("input.1", "float32", (1, 3, "?", "?")),), _det_outputs()),
        lambda g, s: _detector(g)),
    "arcface": _StandinFamily(
        lambda s: ModelSignature((TensorSig("input.1", "float32", ("None", 3, s.size, s.size)),),
                                 (TensorSig("683", "float32", ("None", 512)),)),
        lambda g, s: _recognizer(g)),
    "inswapper": _StandinFamily(
        lambda s: ModelSignature((_image("target", s.size), TensorSig("source", "float32", (1, 512))),
                                 (_image("output", s.size),)),
        lambda g, s: _swapper(g, s, fp16=bool(s.derived_from))),
    "hyperswap": _StandinFamily(
        lambda s: ModelSignature((TensorSig("source", "float32", (1, 512)), _image("target", s.size)),
                                 (_image("output", s.size), TensorSig("mask", "float32", (1, 1, s.size, s.size)))),
        lambda g, s: _swapper(g, s, fp16=bool(s.derived_from))),
    "restorer": _StandinFamily(
        lambda s: ModelSignature((_image("input", s.size), *(TensorSig(n, "float64", (1,)) for n in s.extra_inputs)),
                                 (_image("output", s.size),)),
        _enhancer),
    "xseg": _StandinFamily(
        lambda s: ModelSignature((_mask_image("input", s.size, "nhwc"),),
                                 (TensorSig("output", "float32", ("batch", s.size, s.size, 1)),)),
        _occluder),
    "bisenet": _StandinFamily(
        lambda s: ModelSignature((_mask_image("input", s.size, "nchw"),),
                                 (TensorSig("output", "float32", ("batch", PARSER_CLASSES, s.size, s.size)),)),
        _parser),
}


def _family(spec) -> _StandinFamily:
    try:
        return _FAMILIES[spec.family]
    except KeyError:
        raise KeyError(f"no stand-in for model family {spec.family!r} ({spec.key})") from None


def standin_keys() -> list[str]:
    """Every model that has a stand-in: the learned ones (the offline models are real files
    shipped in packages, or code)."""
    from facepipe.models import LEARNED, MODELS

    return sorted(k for k, s in MODELS.items() if s.group == LEARNED and s.filename)


def _signatures() -> dict[str, ModelSignature]:
    from facepipe.models import MODELS

    return {key: signature(MODELS[key]) for key in standin_keys()}


# key -> the real model's inputs and outputs, for every model with a stand-in.
SIGNATURES: dict[str, ModelSignature] = _signatures()


def _value_info(sig: TensorSig) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(sig.name, sig.elem_type, list(sig.shape))


def make_standin(key: str) -> onnx.ModelProto:
    """Build (in memory) the stand-in for model ``key`` (facepipe.models registry key)."""
    from facepipe.models import MODELS

    if key not in standin_keys():
        raise KeyError(f"no stand-in for {key!r}; available: {standin_keys()}")
    spec = MODELS[key]
    sig = signature(spec)
    g = _Graph()
    _family(spec).build(g, spec)
    graph = helper.make_graph(
        g.nodes,
        f"facepipe_standin_{key}",
        [_value_info(s) for s in sig.inputs],
        [_value_info(s) for s in sig.outputs],
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
        from facepipe.models import MODELS

        for key in standin_keys():
            build_standin(key, args.dest / MODELS[key].filename)
    else:
        build_standin(args.key, args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
