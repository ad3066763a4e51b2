"""Stand-ins must be indistinguishable from the real models at the I/O level
(so insightface's own classes run on them) and must say they are stand-ins."""

from pathlib import Path

import cv2
import insightface
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from insightface.app.common import Face
from insightface.model_zoo.arcface_onnx import ArcFaceONNX
from insightface.model_zoo.inswapper import INSwapper
from insightface.model_zoo.scrfd import SCRFD

from facepipe.models.face_analyzer import DET_BOX_FRACTION
from facepipe.models.standin import SIGNATURES, build_standin

IMAGES = Path(insightface.__file__).parent / "data" / "images"
CPU = ["CPUExecutionProvider"]


@pytest.fixture(scope="module")
def standins(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("standins")
    return {key: build_standin(key, d / f"{key}.onnx") for key in SIGNATURES}


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=CPU)


def _dims(value_info) -> tuple:
    return tuple(
        d.dim_param if d.HasField("dim_param") else d.dim_value for d in value_info.type.tensor_type.shape.dim
    )


@pytest.mark.parametrize("key", sorted(SIGNATURES))
def test_signature_matches_table_and_is_labelled(standins, key):
    model = onnx.load(str(standins[key]))
    sig = SIGNATURES[key]
    for actual, expected in ((model.graph.input, sig.inputs), (model.graph.output, sig.outputs)):
        assert [v.name for v in actual] == [s.name for s in expected]
        assert [v.type.tensor_type.elem_type for v in actual] == [s.elem_type for s in expected]
        assert [_dims(v) for v in actual] == [tuple(s.shape) for s in expected]
    props = {p.key: p.value for p in model.metadata_props}
    assert props == {"facepipe_standin": "true", "real_model": key}
    assert "STAND-IN" in model.doc_string
    assert model.opset_import[0].version == 17


def test_build_is_deterministic_and_atomic(standins, tmp_path):
    again = build_standin("det_10g", tmp_path / "det.onnx")
    assert again.read_bytes() == standins["det_10g"].read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det.onnx"]  # no temp file left


@pytest.fixture(scope="module")
def detector(standins) -> SCRFD:
    det = SCRFD(model_file=str(standins["det_10g"]), session=_session(standins["det_10g"]))
    det.prepare(0, input_size=(640, 640), det_thresh=0.5)
    return det


def test_detector_finds_one_centred_face_on_a_photo(detector):
    img = cv2.imread(str(IMAGES / "t1.jpg"))
    bboxes, kpss = detector.detect(img, input_size=(640, 640))
    assert bboxes.shape == (1, 5) and kpss.shape == (1, 5, 2)
    assert bboxes[0, 4] > 0.5
    # SCRFD letterboxes the photo into the top-left of the 640x640 input; the
    # stand-in's face is centred in that input tensor.
    scale = min(640 / img.shape[1], 640 / img.shape[0])
    half = DET_BOX_FRACTION * 640 / 2
    expected = np.array([320 - half, 320 - half, 320 + half, 320 + half]) / scale
    np.testing.assert_allclose(bboxes[0, :4], expected, atol=2)
    eyes_y = kpss[0, :2, 1]
    mouth_y = kpss[0, 3:, 1]
    assert kpss[0, 0, 0] < kpss[0, 1, 0] and (eyes_y < kpss[0, 2, 1]).all() and (mouth_y > kpss[0, 2, 1]).all()


def test_detector_finds_nothing_on_a_black_frame(detector):
    bboxes, kpss = detector.detect(np.zeros((480, 640, 3), np.uint8), input_size=(640, 640))
    assert bboxes.shape[0] == 0 and kpss.shape[0] == 0


@pytest.mark.parametrize("value", [24, 127, 235])
@pytest.mark.parametrize("input_size", [(640, 384), (640, 640)])
def test_detector_finds_nothing_on_a_flat_frame_whatever_the_padding(detector, value, input_size):
    # A 16:9 frame fills 360 of the input's rows; SCRFD pads the rest with black. The padding's
    # edge is not a face: before, a flat grey 1080p frame scored 0.85 at 640x384.
    frame = np.full((1080, 1920, 3), value, np.uint8)
    bboxes, _ = detector.detect(frame, input_size=input_size)
    assert bboxes.shape[0] == 0


def test_detector_still_finds_the_face_on_a_padded_photo(detector):
    img = cv2.imread(str(IMAGES / "t1.jpg"))
    wide = cv2.copyMakeBorder(img, 0, 0, img.shape[1] // 2, img.shape[1] // 2, cv2.BORDER_CONSTANT)
    bboxes, _ = detector.detect(wide, input_size=(640, 640))
    assert bboxes.shape[0] == 1 and bboxes[0, 4] > 0.6


@pytest.mark.parametrize("hw", [(640, 640), (480, 640), (320, 256)])
def test_detector_anchor_counts_for_any_multiple_of_32(standins, hw):
    h, w = hw
    sess = _session(standins["det_10g"])
    outs = sess.run(None, {"input.1": np.random.default_rng(0).normal(size=(1, 3, h, w)).astype(np.float32)})
    for i, stride in enumerate((8, 16, 32)):
        n = (h // stride) * (w // stride) * 2
        assert outs[i].shape == (n, 1) and outs[i + 3].shape == (n, 4) and outs[i + 6].shape == (n, 10)
    assert (outs[2] > 0.5).sum() == 1 and outs[0].max() == 0 and outs[1].max() == 0


def _face(detector, img) -> Face:
    bboxes, kpss = detector.detect(img, input_size=(640, 640))
    return Face(bbox=bboxes[0, :4], kps=kpss[0], det_score=bboxes[0, 4])


def test_recognizer_is_deterministic_and_discriminative(standins, detector):
    rec = ArcFaceONNX(model_file=str(standins["w600k_r50"]), session=_session(standins["w600k_r50"]))
    assert (rec.input_mean, rec.input_std) == (127.5, 127.5)  # treated as the PyTorch export it mimics
    a = cv2.imread(str(IMAGES / "t1.jpg"))
    b = cv2.imread(str(IMAGES / "Tom_Hanks_54745.png"))
    ea = rec.get(a, _face(detector, a)).copy()
    ea2 = rec.get(a, _face(detector, a)).copy()
    eb = rec.get(b, _face(detector, b)).copy()
    assert ea.shape == (512,)
    np.testing.assert_array_equal(ea, ea2)
    cos = float(ea @ eb / np.linalg.norm(ea) / np.linalg.norm(eb))
    assert cos < 0.9
    batch = rec.get_feat([cv2.resize(a, (112, 112)), cv2.resize(b, (112, 112))])
    assert batch.shape == (2, 512)


@pytest.mark.parametrize("key", ["inswapper_128", "inswapper_128_fp16"])
def test_swapper_changes_only_the_face_region(standins, detector, key):
    swapper = INSwapper(model_file=str(standins[key]), session=_session(standins[key]))
    assert swapper.emap.shape == (512, 512)
    target = cv2.imread(str(IMAGES / "t1.jpg"))
    source = cv2.imread(str(IMAGES / "Tom_Hanks_54745.png"))
    tface = _face(detector, target)
    rec = ArcFaceONNX(model_file=str(standins["w600k_r50"]), session=_session(standins["w600k_r50"]))
    sface = _face(detector, source)
    rec.get(source, sface)
    out = swapper.get(target, tface, sface, paste_back=True)
    assert out.shape == target.shape
    diff = np.abs(out.astype(np.int16) - target.astype(np.int16)).max(axis=2)
    x0, y0, x1, y1 = tface.bbox
    side = x1 - x0
    inner = diff[int(y0 + side * 0.3): int(y1 - side * 0.3), int(x0 + side * 0.3): int(x1 - side * 0.3)]
    assert inner.mean() > 20  # visibly changed
    outside = np.ones_like(diff, bool)
    pad = side * 0.25
    outside[max(0, int(y0 - pad)): int(y1 + pad), max(0, int(x0 - pad)): int(x1 + pad)] = False
    assert diff[outside].max() == 0


def test_swapper_output_depends_on_both_inputs(standins):
    sess = _session(standins["inswapper_128"])
    rng = np.random.default_rng(1)
    t1, t2 = rng.uniform(0, 1, (2, 1, 3, 128, 128)).astype(np.float32)
    s1, s2 = (v / np.linalg.norm(v) for v in rng.normal(size=(2, 1, 512)).astype(np.float32))
    run = lambda t, s: sess.run(None, {"target": t, "source": s})[0]  # noqa: E731
    out = run(t1, s1)
    assert out.shape == (1, 3, 128, 128) and out.min() >= 0 and out.max() <= 1
    assert np.abs(out - run(t2, s1)).mean() > 0.01
    assert np.abs(out - run(t1, s2)).mean() > 0.01
    fp16 = _session(standins["inswapper_128_fp16"]).run(None, {"target": t1, "source": s1})[0]
    assert fp16.dtype == np.float32
    np.testing.assert_allclose(fp16, out, atol=0.02)


def test_enhancer_is_a_gentle_change_in_range(standins):
    sess = _session(standins["gfpgan_1.4"])
    img = cv2.resize(cv2.imread(str(IMAGES / "t1.jpg")), (512, 512))
    x = (img[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255 - 0.5) / 0.5
    y = sess.run(None, {"input": x})[0]
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    change = np.abs(y - x).mean()
    assert 0.001 < change < 0.1
    np.testing.assert_array_equal(y, sess.run(None, {"input": x})[0])
