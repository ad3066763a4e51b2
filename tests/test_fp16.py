"""FP16 swapper made from the verified FP32 one: same signature, emap intact, close output."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from facepipe.models.download import ChecksumError, verify_before_use
from facepipe.models.fp16 import convert_to_fp16
from facepipe.models.standin import SIGNATURES, build_standin


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("fp16")
    src = build_standin("inswapper_128", d / "standin_fp32" / "inswapper_128.onnx")
    # Named as the real file so the load-time check applies to it.
    dst = convert_to_fp16(src, d / "models" / "inswapper_128_fp16.onnx")
    return src, dst


def test_signature_and_emap_survive(pair):
    src, dst = pair
    half = onnx.load(str(dst))
    sig = SIGNATURES["inswapper_128"]
    assert [i.name for i in half.graph.input] == [t.name for t in sig.inputs]
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in half.graph.input)
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in half.graph.output)
    original = numpy_helper.to_array(onnx.load(str(src)).graph.initializer[-1])
    kept = numpy_helper.to_array(half.graph.initializer[-1])
    assert half.graph.initializer[-1].name == onnx.load(str(src)).graph.initializer[-1].name
    assert np.allclose(kept.astype(np.float32), original, atol=1e-2)
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in half.graph.initializer)


def test_fp16_output_is_close_to_fp32(pair):
    src, dst = pair
    rng = np.random.default_rng(0)
    feed = {"target": rng.random((1, 3, 128, 128), dtype=np.float32),
            "source": rng.standard_normal((1, 512)).astype(np.float32)}
    a = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    b = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert b.dtype == np.float32 and np.abs(a - b).max() < 1e-2


def test_derived_model_is_trusted_only_as_made(pair, tmp_path):
    src, _ = pair
    dst = convert_to_fp16(src, tmp_path / "inswapper_128_fp16.onnx")
    verify_before_use(dst)  # the stamp written at conversion matches
    dst.write_bytes(dst.read_bytes() + b"\0")
    with pytest.raises(ChecksumError, match="not the file this workflow made"):
        verify_before_use(dst)


def test_insightface_loads_the_fp16_swapper(pair):
    from insightface.model_zoo.inswapper import INSwapper

    _, dst = pair
    swapper = INSwapper(model_file=str(dst), session=ort.InferenceSession(str(dst),
                                                                           providers=["CPUExecutionProvider"]))
    assert swapper.emap.shape == (512, 512) and swapper.input_size == (128, 128)


def test_fp16_swapper_is_made_not_downloaded(tmp_path, media_dir):
    import shutil

    from tests.workflow_helpers import copy_workflow
    from tests.workflow_helpers import snakemake

    wd = copy_workflow(tmp_path / "wf")
    shutil.copy(media_dir / "clip.mp4", wd / "clip.mp4")
    shutil.copy(media_dir / "astronaut.png", wd / "face.png")
    proc = snakemake(wd, "--dry-run", "resources/models/inswapper_128_fp16.onnx", "--config",
                     "target=clip.mp4", "source=face.png", "backend=insightface", "precision=fp16")
    plan = proc.stdout
    assert "rule make_fp16_model" in plan
    assert "output: resources/models/inswapper_128.onnx" in plan  # the FP32 file, fetched and verified
    assert "output: resources/models/inswapper_128_fp16.onnx" in plan.split("rule make_fp16_model")[1]


def test_no_shape_hints_tie_outputs_of_different_sizes(tmp_path):
    """The detector's outputs share a symbolic dim ("?") though each scale has its own size. The
    converter's shape hints on its Cast nodes made CUDA's planner reuse one scale's buffer for
    another (seen on an H200); the FP16 copy keeps no hints, and runs at any input size."""
    from tools.fullsize import make_fullsize

    src = tmp_path / "det_10g.fullsize.onnx"
    onnx.save(make_fullsize("det_10g", width=0.25), str(src))
    outputs = onnx.load(str(src)).graph.output
    assert len({o.type.tensor_type.shape.dim[0].dim_param for o in outputs}) == 1  # the case itself
    dst = convert_to_fp16(src, tmp_path / "models" / "det_10g_fp16.onnx")
    assert not onnx.load(str(dst)).graph.value_info
    session = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    sizes = [o.shape[0] for o in session.run(None, {"input.1": np.zeros((1, 3, 384, 640), np.float32)})[:3]]
    assert sizes == [7680, 1920, 480]
