"""dlib's face recognition ResNet (the offline backend's 128-D identity) on ONNX Runtime.

dlib's wheel on PyPI is built without BLAS, and its ResNet takes about 90 ms a face on one CPU core:
most of the offline detection's time (one frame in facepipe.faces.detection.IDENTITY_EVERY, every
face). The same network on ONNX Runtime takes about 7 ms. The network is rebuilt here from the
model file itself (dlib_face_recognition_resnet_model_v1.dat, which the face-recognition-models
package ships): its parameter tensors are read in the order dlib wrote them, onto the architecture
of dlib's dnn_face_recognition_ex.cpp, and every tensor's size must match that architecture exactly.

- ``convert`` (rule convert_offline_models, through the registry's entry dlib_resnet_v1_onnx):
  rebuilt once, checked against dlib's own descriptor on fixed chips, sealed. The offline backend
  runs that file.
- ``DlibResNet`` on the .dat itself (tools and tests pass it): rebuilt in memory and checked on one
  chip; a file that does not fit, or a network that does not agree, is not used: dlib's own
  (slower) descriptor is, with a warning.

Face chips are cut by dlib itself (get_face_chips: 150 px, padding 0.25, from the 68 points), as
compute_face_descriptor cuts them. The network runs on the CPU provider: it is small, and one
batch holds a frame's faces.

The architecture (dlib's names): con 32 7x7 /2, affine, relu, max_pool 3x3 /2; then residual blocks
(con 3x3, affine, relu, con 3x3, affine, added to the block's input, relu): 3 of 32 channels; a
downsampling one (its first con /2, the input average-pooled 2x2 /2) and 3 of 64; a downsampling
one and 2 of 128; a downsampling one and 2 of 256; a downsampling one of 256; a global average
pool; fc_no_bias 256 -> 128. Convolutions with a stride of 2 are not padded. Where a block's
output and its pooled input differ in size or channels, dlib adds them where they overlap and
keeps the rest of the larger (add_prev): here both are zero-padded at the end to the larger.
The input is the RGB chip minus the mean colour (122.782, 117.001, 104.298), over 256.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CHIP_SIZE = 150
CHIP_PADDING = 0.25
MEAN_RGB = (122.782, 117.001, 104.298)
DESCRIPTOR_SIZE = 128
# The largest absolute difference from dlib's own descriptor allowed on the check chip (the
# descriptors' norm is about 1.3; dlib's face distance threshold 0.6; the rebuilt network agrees
# to about 3e-7, a wrong layout by far more than this).
CHECK_TOLERANCE = 1e-4
# (channels, residual blocks, whether the first downsamples) of each level after the stem: the
# last level is a downsampling block alone.
LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))
STEM_CHANNELS, STEM_KERNEL = 32, 7


class ModelLayoutError(ValueError):
    """The model file does not hold dlib's face recognition ResNet as this module knows it."""


def _read_int(data: bytes, pos: int) -> tuple[int | None, int]:
    """One integer as dlib serializes it (a control byte: the sign in bit 7, the number of
    little-endian bytes that follow in bits 0-3), and the position after it; None where the
    byte at ``pos`` cannot start one."""
    control = data[pos]
    size = control & 0x0F
    if size > 8 or control & 0x70:
        return None, pos
    value = int.from_bytes(data[pos + 1:pos + 1 + size], "little")
    return (-value if control & 0x80 else value), pos + 1 + size


def read_tensors(data: bytes) -> list[np.ndarray]:
    """The float tensors of a dlib network file, in file order: each is written as version 2, its
    four dimensions, then the values as little-endian float32 (dlib's tensor serialization). The
    bytes between them (layer names, settings) are passed over. Tensors of 16 values or fewer are
    read past but not kept: the loss layer's settings start with bytes that read as a 2x2x2x2
    tensor, and the smallest parameter tensor here has 64 values."""
    tensors, pos, end = [], 0, len(data) - 10
    while pos < end:
        version, after = _read_int(data, pos)
        if version == 2:
            dims, at = [], after
            for _ in range(4):
                value, at = _read_int(data, at)
                if value is None or not 0 <= value <= 10 ** 7:
                    break
                dims.append(value)
            count = int(np.prod(dims)) if len(dims) == 4 else 0
            if count >= 16 and at + 4 * count <= len(data):
                if count > 16:
                    tensors.append(np.frombuffer(data, "<f4", count, at).copy())
                pos = at + 4 * count
                continue
        pos += 1
    return tensors


def build_onnx(tensors: list[np.ndarray]) -> bytes:
    """The ONNX model (serialized) of dlib's ResNet with these parameter tensors: input ``chip``
    (n, 3, 150, 150) RGB 0-255, output ``descriptor`` (n, 128). Raises ModelLayoutError where the
    tensors do not fit the architecture."""
    # lazy: onnx is needed only where the network is built
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    params = iter(tensors)
    nodes, weights = [], []
    count = [0]

    def new(prefix: str) -> str:
        count[0] += 1
        return f"{prefix}_{count[0]}"

    def take(size: int, what: str) -> np.ndarray:
        value = next(params, None)
        if value is None or value.size != size:
            got = "none" if value is None else value.size
            raise ModelLayoutError(f"expected {what} of {size} values, found {got}")
        return value

    def constant(value: np.ndarray, prefix: str) -> str:
        name = new(prefix)
        weights.append(numpy_helper.from_array(value, name))
        return name

    def op(kind: str, inputs: list[str], **attrs) -> str:
        out = new(kind.lower())
        nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def conv(x: str, cin: int, cout: int, kernel: int, stride: int) -> str:
        n = cin * cout * kernel * kernel
        p = take(n + cout, f"a {kernel}x{kernel} convolution {cin}->{cout}")
        pad = kernel // 2 if stride == 1 else 0  # dlib's con_ pads only unstrided convolutions
        return op("Conv", [x, constant(p[:n].reshape(cout, cin, kernel, kernel), "w"), constant(p[n:], "b")],
                  kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4)

    def affine(x: str, channels: int) -> str:
        p = take(2 * channels, f"an affine layer of {channels} channels")
        scaled = op("Mul", [x, constant(p[:channels].reshape(1, channels, 1, 1), "gamma")])
        return op("Add", [scaled, constant(p[channels:].reshape(1, channels, 1, 1), "beta")])

    def block(x: str, cin: int, cout: int, stride: int) -> str:
        return affine(conv(op("Relu", [affine(conv(x, cin, cout, 3, stride), cout)]), cout, cout, 3, 1), cout)

    def padded(x: str, channels: int, side: int, to_channels: int, to_side: int) -> str:
        if channels == to_channels and side == to_side:
            return x
        grow = np.array([0, 0, 0, 0, 0, to_channels - channels, to_side - side, to_side - side], np.int64)
        return op("Pad", [x, constant(grow, "pads")], mode="constant")

    x = op("Mul", [op("Sub", ["chip", constant(np.array(MEAN_RGB, np.float32).reshape(1, 3, 1, 1), "mean")]),
                   constant(np.array(1 / 256, np.float32), "scale")])
    x = op("Relu", [affine(conv(x, 3, STEM_CHANNELS, STEM_KERNEL, 2), STEM_CHANNELS)])
    x = op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2])
    side = ((CHIP_SIZE - STEM_KERNEL) // 2 + 1 - 3) // 2 + 1
    channels = STEM_CHANNELS
    for width, blocks, down in LEVELS:
        for i in range(blocks):
            if down and i == 0:
                out_side, pooled_side = (side - 3) // 2 + 1, (side - 2) // 2 + 1
                to_side = max(out_side, pooled_side)
                pooled = op("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
                x = op("Relu", [op("Add", [padded(block(x, channels, width, 2), width, out_side, width, to_side),
                                           padded(pooled, channels, pooled_side, width, to_side)])])
                side, channels = to_side, width
            else:
                x = op("Relu", [op("Add", [block(x, width, width, 1), x])])
    flat = op("Flatten", [op("GlobalAveragePool", [x])])
    fc = take(channels * DESCRIPTOR_SIZE, f"a fully connected layer {channels}->{DESCRIPTOR_SIZE}")
    nodes.append(helper.make_node("MatMul", [flat, constant(fc.reshape(channels, DESCRIPTOR_SIZE), "fc")],
                                  ["descriptor"]))
    if next(params, None) is not None:
        raise ModelLayoutError("more parameter tensors than the architecture has")
    chip = helper.make_tensor_value_info("chip", TensorProto.FLOAT, ["n", 3, CHIP_SIZE, CHIP_SIZE])
    descriptor = helper.make_tensor_value_info("descriptor", TensorProto.FLOAT, ["n", DESCRIPTOR_SIZE])
    graph = helper.make_graph(nodes, "dlib_face_recognition_resnet_model_v1", [chip], [descriptor], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="facepipe")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@lru_cache(maxsize=2)
def _onnx_of(path: str, size: int, mtime_ns: int) -> bytes:
    return build_onnx(read_tensors(Path(path).read_bytes()))


def check_chip(seed: int = 0) -> np.ndarray:
    """A fixed chip (150 x 150 RGB, uint8) the rebuilt network is checked on: smooth noise, so every
    filter sees structure at its own scale."""
    # lazy: cv2 is loaded by every caller already; this keeps the module's import light
    import cv2

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (19, 19, 3), dtype=np.uint8)
    chip = cv2.resize(coarse, (CHIP_SIZE, CHIP_SIZE), interpolation=cv2.INTER_CUBIC)
    return np.clip(chip.astype(np.int16) + rng.integers(-12, 13, chip.shape), 0, 255).astype(np.uint8)


def _cpu_session(model, threads: int):
    # lazy: ONNX Runtime is slow to import; the analyzer that needs it is made in the rule's process
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _difference(session, reference, chips: list[np.ndarray]) -> float:
    """The largest absolute difference of the session's descriptors from dlib's own on ``chips``."""
    want = np.stack([np.asarray(reference.compute_face_descriptor(chip), np.float32) for chip in chips])
    got = session.run(None, {"chip": np.stack(chips).transpose(0, 3, 1, 2).astype(np.float32)})[0]
    return float(np.abs(want - got).max())


def convert(source: str | Path, out: str | Path, *, tolerance: float = CHECK_TOLERANCE) -> dict:
    """Rebuild dlib's ResNet from its model file ``source`` on ONNX (build_onnx), check it against
    dlib's own descriptor on check chips, and place it sealed at ``out`` (rule
    convert_offline_models). Returns the check's figures; raises ModelLayoutError (and leaves
    nothing at ``out``) when the file does not fit or the descriptors differ."""
    # lazy: the Snakefile imports the registry that names this function while it parses
    from facepipe.media.integrity import place_sealed
    from facepipe.models.dlib_face import import_dlib

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = build_onnx(read_tensors(Path(source).read_bytes()))
    worst = _difference(_cpu_session(model, 1), import_dlib().face_recognition_model_v1(str(source)),
                        [check_chip(seed) for seed in range(3)])
    if not worst <= tolerance:
        raise ModelLayoutError(f"{source} rebuilt on ONNX differs from dlib's descriptor by {worst:.1e} "
                               f"(limit {tolerance:.0e}): not used")
    tmp = out.with_name(f"{out.name}.tmp")
    try:
        tmp.write_bytes(model)
        place_sealed(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"model": str(out), "source": str(source), "max_abs_diff_vs_dlib": worst}


class DlibResNet:
    """128-D face descriptors, as dlib's face_recognition_model_v1.compute_face_descriptor gives
    them (num_jitters 0), for the faces of one image at a time. ``model_file``: the converted
    model (.onnx, rule convert_offline_models: sealed, checked when it was made), or dlib's own
    file (.dat: rebuilt here in memory and checked, or, where it does not fit, dlib runs it)."""

    def __init__(self, model_file: str | Path, dlib_module, *, threads: int = 1):
        self.path = Path(model_file)
        self._dlib = dlib_module
        self._reference = None
        self.session = None
        if self.path.suffix == ".onnx":
            # lazy: ONNX Runtime is slow to import; the analyzer that needs it is made in the rule's process
            from facepipe.models.runtime import create_session

            self.session = create_session(self.path, ["cpu"], threads=max(1, threads), log=log)
            return
        self._reference = dlib_module.face_recognition_model_v1(str(self.path))
        try:
            stat = self.path.stat()
            session = _cpu_session(_onnx_of(str(self.path.resolve()), stat.st_size, stat.st_mtime_ns), threads)
            diff = _difference(session, self._reference, [check_chip()])
            if not diff <= CHECK_TOLERANCE:
                raise ModelLayoutError(f"its descriptor differs from dlib's by {diff:.1e} "
                                       f"(limit {CHECK_TOLERANCE:.0e})")
            self.session = session
        except ModelLayoutError as exc:
            log.warning("%s: not rebuilt on ONNX Runtime (%s); dlib's own, slower descriptor is used", self.path, exc)

    def descriptors(self, rgb: np.ndarray, shapes) -> np.ndarray:
        """(n, 128) float32: one descriptor per dlib full_object_detection (68 points) in ``shapes``,
        on the RGB image ``rgb``."""
        if len(shapes) == 0:
            return np.zeros((0, DESCRIPTOR_SIZE), np.float32)
        if self.session is None:
            return np.asarray([np.asarray(d, np.float32)
                               for d in self._reference.compute_face_descriptor(rgb, shapes, 0)])
        chips = self._dlib.get_face_chips(rgb, shapes, size=CHIP_SIZE, padding=CHIP_PADDING)
        batch = np.stack([np.asarray(c) for c in chips]).transpose(0, 3, 1, 2).astype(np.float32)
        return self.session.run(None, {self.session.get_inputs()[0].name: batch})[0]
