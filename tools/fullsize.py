"""Full-size stand-ins: random-weight graphs as large as the real models, for timing providers.

The tiny stand-ins (facepipe.models.standin) make the pipeline's wiring testable but cost nothing to
run, so they say nothing about CPU against CUDA against TensorRT, or FP32 against FP16. These
graphs have the real models' inputs and outputs (facepipe.models.standin.SIGNATURES) and a layout
from the same architecture family, sized so that their parameter count is close to the real
file's and their multiply-accumulates (MACs) are of the same order:

* det_10g: an SCRFD-like backbone with heads at strides 8, 16 and 32 (SCRFD-10GF: about
  4 M parameters, 10 GFLOPs at 640x640);
* w600k_r50: the iResNet-50 layout (3, 4, 14, 3 residual blocks) and its 25088 -> 512 embedding
  layer (about 43.6 M parameters, 6.3 GFLOPs);
* inswapper_128: an encoder to 32x32x1024, six residual blocks modulated by the source latent
  (AdaIN-like), and a decoder (the file is about 530 MB, about 138 M parameters);
* hyperswap_1a_256 (1b and 1c are the same network with other weights): the same encoder,
  modulated residual blocks and decoder at 256x256, a [-1, 1] output and a mask (the file is
  402,742,682 bytes, about 100.7 M parameters);
* gfpgan_1.4: a U-Net from 512x512 down to 4x4 and back with skip connections (the file is about
  340 MB, about 85 M parameters).

Weights are random: the outputs mean nothing, and every graph says so in its metadata
(``facepipe_standin`` = "fullsize"). ``width`` scales every channel count, so tests can build
the same graphs small.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from facepipe.models.standin import IR_VERSION, OPSET, SIGNATURES, value_info

# The real files' parameter counts (from their sizes in FP32) and published FLOPs where known.
REAL_PARAMS = {"det_10g": 4.2e6, "w600k_r50": 43.6e6, "inswapper_128": 138e6, "hyperswap_1a_256": 100.7e6,
               "gfpgan_1.4": 85e6}


@dataclass
class Net:
    """A graph under construction that counts its parameters and MACs (spatial sizes at the
    nominal input: 640x640 for the detector)."""

    width: float = 1.0
    seed: int = 0

    def __post_init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.params = 0
        self.macs = 0
        self._n = 0
        self._rng = np.random.default_rng(self.seed)

    def ch(self, channels: int) -> int:
        return max(4, int(round(channels * self.width)))

    def _name(self, kind: str) -> str:
        self._n += 1
        return f"fullsize_{kind}_{self._n}"

    def const(self, value: np.ndarray) -> str:
        name = self._name("w")
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def weight(self, *shape: int, fan_in: int) -> str:
        self.params += int(np.prod(shape))
        w = self._rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(1.0 / fan_in))
        return self.const(w)

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        out = output or self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self._name(op_type), **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, hw: int, *, k: int = 3, stride: int = 1, act: bool = True,
             output: str | None = None) -> tuple[str, int]:
        out_hw = hw // stride
        w = self.weight(cout, cin, k, k, fan_in=cin * k * k)
        b = self.const(np.zeros(cout, np.float32))
        self.params += cout
        self.macs += cout * cin * k * k * out_hw * out_hw
        y = self.op("Conv", [x, w, b], None if act else output, kernel_shape=[k, k], strides=[stride, stride],
                    pads=[k // 2] * 4)
        if act:
            y = self.op("LeakyRelu", [y], output, alpha=0.2)
        return y, out_hw

    def model(self, key: str) -> onnx.ModelProto:
        sig = SIGNATURES[key]
        graph = helper.make_graph(self.nodes, f"facepipe_fullsize_{key}", [value_info(s) for s in sig.inputs],
                                  [value_info(s) for s in sig.outputs], initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                                  producer_name="facepipe.fullsize",
                                  doc_string=f"FULL-SIZE STAND-IN for {key}: random weights, for timing only.")
        helper.set_model_props(model, {"facepipe_standin": "fullsize", "real_model": key,
                                       "params": str(self.params), "macs": str(self.macs)})
        return model


def _detector(net: Net) -> None:
    x, hw, c = "input.1", 640, 3
    for cout, stride in ((16, 2), (16, 1), (32, 2), (32, 1)):
        x, hw = net.conv(x, c, net.ch(cout), hw, stride=stride)
        c = net.ch(cout)
    features = []
    for cout, blocks in ((64, 3), (128, 3), (256, 2)):  # strides 8, 16, 32
        x, hw = net.conv(x, c, net.ch(cout), hw, stride=2)
        c = net.ch(cout)
        for _ in range(blocks):
            y, _ = net.conv(x, c, c, hw)
            y, _ = net.conv(y, c, c, hw, act=False)
            x = net.op("Relu", [net.op("Add", [x, y])])
        features.append((x, c, hw))
    names = {"score": ("448", "471", "494"), "bbox": ("451", "474", "497"), "kps": ("454", "477", "500")}
    head = net.ch(48)
    for level, (feat, c, hw) in enumerate(features):
        h, _ = net.conv(feat, c, head, hw)
        h, _ = net.conv(h, head, head, hw)
        for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
            y, _ = net.conv(h, head, 2 * width, hw, k=1, act=False)  # two anchors per position
            y = net.op("Reshape", [net.op("Transpose", [y], perm=[0, 2, 3, 1]),
                                   net.const(np.array([-1, width], np.int64))],
                       None if kind == "score" else names[kind][level])
            if kind == "score":
                net.op("Sigmoid", [y], names[kind][level])


def _recognizer(net: Net) -> None:
    x, c = "input.1", net.ch(64)
    x, hw = net.conv(x, 3, c, 112)
    for cout, blocks in ((64, 3), (128, 4), (256, 14), (512, 3)):  # iResNet-50
        cout = net.ch(cout)
        for b in range(blocks):
            stride = 2 if b == 0 else 1
            y, out_hw = net.conv(x, c, cout, hw, stride=stride)
            y, _ = net.conv(y, cout, cout, out_hw, act=False)
            shortcut = x if stride == 1 and c == cout else net.conv(x, c, cout, hw, k=1, stride=stride, act=False)[0]
            x, hw, c = net.op("Add", [y, shortcut]), out_hw, cout
    flat = net.op("Flatten", [x], axis=1)
    w = net.weight(c * hw * hw, 512, fan_in=c * hw * hw)
    net.macs += c * hw * hw * 512
    net.op("MatMul", [flat, w], "683")


def _swapper(net: Net, size: int = 128, blocks: int = 6, emap: bool = True) -> None:
    x, hw, c = "target", size, 3
    for cout, k, stride in ((128, 7, 1), (256, 3, 2), (512, 3, 2), (1024, 3, 1)):
        x, hw = net.conv(x, c, net.ch(cout), hw, k=k, stride=stride)
        c = net.ch(cout)

    def modulate(t: str) -> str:
        # The source latent scales and shifts every channel, as AdaIN does.
        style = net.op("MatMul", ["source", net.weight(512, 2 * c, fan_in=512)])
        net.macs += 512 * 2 * c
        scale, shift = net._name("scale"), net._name("shift")
        net.nodes.append(helper.make_node("Split", [style, net.const(np.array([c, c], np.int64))], [scale, shift],
                                          name=net._name("Split"), axis=1))
        shape = net.const(np.array([1, c, 1, 1], np.int64))
        scale = net.op("Reshape", [scale, shape])
        shift = net.op("Reshape", [shift, shape])
        return net.op("Add", [net.op("Mul", [t, scale]), shift])

    for _ in range(blocks):
        y, _ = net.conv(x, c, c, hw)
        y = modulate(y)
        y, _ = net.conv(y, c, c, hw, act=False)
        x = net.op("Add", [x, modulate(y)])
    for cout in (512, 256):
        x = net.op("Resize", [x, "", net.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
        hw *= 2
        x, hw = net.conv(x, c, net.ch(cout), hw)
        c = net.ch(cout)
    x, hw = net.conv(x, c, net.ch(128), hw)
    y, _ = net.conv(x, net.ch(128), 3, hw, k=7, act=False)
    if not emap:
        # HyperSwap: a [-1, 1] face and a mask, the source embedding used as it is.
        net.op("Tanh", [y], "output")
        m, _ = net.conv(x, net.ch(128), 1, hw, k=3, act=False)
        net.op("Sigmoid", [m], "mask")
        return
    net.op("Sigmoid", [y], "output")
    # insightface's INSwapper reads its emap from the graph's last initializer.
    net.inits.append(numpy_helper.from_array(np.linalg.qr(net._rng.standard_normal((512, 512)))[0]
                                             .astype(np.float32), "emap"))
    net.params += 512 * 512


def _enhancer(net: Net) -> None:
    widths = {512: 32, 256: 64, 128: 128, 64: 256, 32: 512, 16: 512, 8: 512, 4: 512}
    x, hw = net.conv("input", 3, net.ch(widths[512]), 512)
    c, skips = net.ch(widths[512]), []
    while hw > 4:
        skips.append((x, hw, c))
        cout = net.ch(widths[hw // 2])
        x, hw = net.conv(x, c, cout, hw, stride=2)
        x, _ = net.conv(x, cout, cout, hw)
        c = cout
    for _ in range(12):  # the bottleneck carries the latent style code
        x, _ = net.conv(x, c, c, hw)
    while skips:
        skip, skip_hw, skip_c = skips.pop()
        x = net.op("Resize", [x, "", net.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
        hw = skip_hw
        x, _ = net.conv(x, c, skip_c, hw)
        x = net.op("Add", [x, skip])
        x, _ = net.conv(x, skip_c, skip_c, hw)
        if hw <= 64:  # StyleGAN2-like decoders spend most parameters at low resolution
            for _ in range(3):
                x, _ = net.conv(x, skip_c, skip_c, hw)
        c = skip_c
    y, _ = net.conv(x, c, 3, hw, act=False)
    net.op("Tanh", [y], "output")


BUILDERS = {"det_10g": _detector, "w600k_r50": _recognizer, "inswapper_128": _swapper,
            "hyperswap_1a_256": lambda net: _swapper(net, size=256, blocks=4, emap=False), "gfpgan_1.4": _enhancer}


def make_fullsize(key: str, width: float = 1.0) -> onnx.ModelProto:
    """The full-size stand-in for ``key`` (``width`` < 1 builds it narrower, for tests)."""
    net = Net(width=width)
    BUILDERS[key](net)
    return net.model(key)


def size_of(model: onnx.ModelProto) -> tuple[int, int]:
    """(parameters, MACs at the nominal input) recorded in a full-size stand-in."""
    props = {p.key: p.value for p in model.metadata_props}
    return int(props["params"]), int(props["macs"])
