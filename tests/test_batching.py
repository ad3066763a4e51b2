"""Batched copies of fixed-batch models (facepipe.models.batching) and the batched swap and enhancer."""

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

from facepipe.models.batching import BATCH_NOTE_KEY, check_batched, make_batched, with_dynamic_batch
from facepipe.models.download import ChecksumError, verify_before_use
from facepipe.models import batched_path
from facepipe.models.standin import build_standin
from facepipe.media.patches import Patch
from tests.model_helpers import INSWAPPER_CROP, inswapper, restorer, swap_crops


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models") / "standin"
    d.mkdir()
    return {k: build_standin(k, d / f"{k}.onnx") for k in ("inswapper_128", "inswapper_128_fp16", "gfpgan_1.4")}


def _batched(models, key, precision="fp32"):
    path = batched_path(models[key])
    if not path.exists():
        assert make_batched(models[key], path, precision=precision)
    return path


def _input_shapes(path):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {i.name: i.shape for i in session.get_inputs()}, session.get_modelmeta().custom_metadata_map


@pytest.mark.parametrize("key, precision", [("inswapper_128", "fp32"), ("inswapper_128_fp16", "fp16"),
                                            ("gfpgan_1.4", "fp32")])
def test_batched_copy_takes_a_free_batch_and_keeps_what_insightface_reads(models, key, precision):
    path = _batched(models, key, precision)
    shapes, meta = _input_shapes(path)
    assert all(shape[0] == "batch" for shape in shapes.values())
    assert meta[BATCH_NOTE_KEY].startswith("batch freed")
    assert meta["facepipe_standin"] == "true"  # still says what it is
    # INSwapper reads its emap from the last initializer: the rewrite must keep it there.
    original, batched = onnx.load(str(models[key])), onnx.load(str(path))
    assert batched.graph.initializer[-1].name == original.graph.initializer[-1].name
    assert batched.graph.initializer[-1].raw_data == original.graph.initializer[-1].raw_data


def test_rewrite_frees_reshape_targets_that_hard_code_the_batch(models):
    original = onnx.load(str(models["inswapper_128"]))
    naive = onnx.ModelProto()
    naive.CopyFrom(original)
    for vi in [*naive.graph.input, *naive.graph.output]:
        vi.type.tensor_type.shape.dim[0].dim_param = "batch"
    # Freeing only the graph's inputs is not enough: the stand-in's Reshape to [1, 3, 1, 1]
    # breaks at batch 3, and the check says so.
    assert "does not run" in check_batched(original, naive, tolerance=1e-4)
    batched, changed = with_dynamic_batch(original)
    assert changed == 1
    assert check_batched(original, batched, tolerance=1e-4) is None


def _mixing_model(path):
    """A graph whose output mixes the batch (a sum over it): no rewrite can batch it."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    node = helper.make_node("ReduceSum", ["x"], ["y"], keepdims=1, axes=[0])
    graph = helper.make_graph([node], "mix", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_model_that_fails_the_check_is_written_with_its_fixed_batch_and_the_reason(tmp_path):
    src = _mixing_model(tmp_path / "mix.onnx")
    assert make_batched(src, batched_path(src)) is False
    shapes, meta = _input_shapes(batched_path(src))
    assert shapes["x"][0] == 1
    assert meta[BATCH_NOTE_KEY].startswith("batch kept fixed") and "shape" in meta[BATCH_NOTE_KEY]


def _crops(n, size, seed=3):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), np.uint8) for _ in range(n)]


@pytest.mark.parametrize("pad", [False, True])
def test_batched_swap_gives_the_one_at_a_time_patches(models, pad):
    crops = _crops(11, 128)
    matrices = [np.array([[1, 0, i], [0, 1, 2 * i]], np.float64) for i in range(11)]
    source = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    single = inswapper(models["inswapper_128"], batch_size=4)
    assert single.batch_size == 1  # the published signature's batch is fixed: one per call
    batched = inswapper(_batched(models, "inswapper_128"), batch_size=4)
    assert batched.batch_size == 4
    batched.runner.pad = pad  # what a TensorRT session does: the last batch of 3 padded to 4
    want = [swap_crops(single, [c], [m], source)[0] for c, m in zip(crops, matrices)]
    got = swap_crops(batched, crops, matrices, source)
    assert len(got) == 11
    for w, g in zip(want, got):
        assert np.abs(w.image.astype(int) - g.image.astype(int)).max() <= 1
        assert np.array_equal(w.matrix, g.matrix)
    assert not np.array_equal(got[0].image, got[1].image)


def test_batched_io_bound_swap_follows_the_batch_size(models):
    """IO binding binds the repeated source latent; the last, smaller batch must rebind it."""
    crops, matrices = _crops(5, 128), [np.eye(2, 3)] * 5
    source = np.random.default_rng(1).standard_normal(512).astype(np.float32)
    path = _batched(models, "inswapper_128")
    plain = swap_crops(inswapper(path, batch_size=2, io_binding=False), crops, matrices, source)
    bound = swap_crops(inswapper(path, batch_size=2, io_binding=True), crops, matrices, source)
    assert all(np.array_equal(p.image, b.image) for p, b in zip(plain, bound))


def test_batched_enhancer_gives_the_one_at_a_time_crops(models):
    crops = _crops(5, 512, seed=4)
    single = restorer(models["gfpgan_1.4"], batch_size=4)
    batched = restorer(_batched(models, "gfpgan_1.4"), batch_size=2)
    assert (single.batch_size, batched.batch_size) == (1, 2)
    want = [single.enhance([c])[0] for c in crops]
    got = batched.enhance(crops)
    assert len(got) == 5
    assert all(np.abs(w.astype(int) - g.astype(int)).max() <= 1 for w, g in zip(want, got))
    assert not np.array_equal(got[0], crops[0])


def test_a_real_batched_copy_not_made_here_is_refused(tmp_path):
    fake = tmp_path / "inswapper_128_batched.onnx"
    fake.write_bytes(b"not the file the workflow made")
    with pytest.raises(ChecksumError, match="inswapper_128_batched.onnx.*made from the verified inswapper_128.onnx"):
        verify_before_use(fake)


def test_batched_segment_swap_keeps_every_frames_faces_in_order(models, tmp_path):
    """Batches cut across frames (3, 1 and 2 faces with a batch of 2); each frame's patches
    must still be its own faces, in face order, as one face per call gives them."""
    import cv2
    import pandas as pd

    from facepipe.media.demo import insightface_image
    from facepipe.models.face_analyzer import FaceAnalyzer
    from facepipe.faces.detection import detect_frames, write_faces
    from facepipe.media.patches import encode_image, read_patches
    from facepipe.swap.segment import swap_segment
    from facepipe.media.video import WorkFrame

    d = models["inswapper_128"].parent
    det, rec = build_standin("det_10g", d / "det_10g.onnx"), build_standin("w600k_r50", d / "w600k_r50.onnx")
    img = cv2.resize(cv2.imread(str(insightface_image("t1.jpg"))), (640, 360))
    row = detect_frames(FaceAnalyzer(det, rec, ["cpu"]), [WorkFrame(1, bgr=img)], crop=INSWAPPER_CROP).iloc[0]
    crops = iter(_crops(6, 144, seed=9))  # detection's canvas: the 128 px crop and a margin
    table = pd.DataFrame([{**row.to_dict(), "frame": frame, "face": face, "crop": encode_image(next(crops))}
                          for frame, faces in ((1, 3), (2, 1), (4, 2)) for face in range(faces)])
    write_faces(table, tmp_path / "faces.parquet")
    source = np.random.default_rng(2).standard_normal(512).astype(np.float32)
    results = []
    for model, batch in ((models["inswapper_128"], 1), (_batched(models, "inswapper_128"), 2)):
        out = tmp_path / f"patches_{batch}.parquet"
        tracked = table.assign(seg_frame=table["frame"], filled=False, person=table["face"] + 1, track=0,
                               source="source")
        swapper = inswapper(model, batch_size=batch)
        swappers = {"source": (swapper, swapper.prepare_source({"embedding": source}))}
        assert swap_segment(tmp_path / "faces.parquet", tracked, swappers, out, crop_kind=INSWAPPER_CROP) == 6
        results.append([patch for patches in read_patches(out).values() for patch in patches])
    single, batched = results
    assert [(p.frame, p.face) for p in batched] == [(1, 0), (1, 1), (1, 2), (2, 0), (4, 0), (4, 1)]
    assert [(p.frame, p.face) for p in single] == [(p.frame, p.face) for p in batched]
    assert all(np.abs(a.image.astype(int) - b.image.astype(int)).max() <= 1 for a, b in zip(single, batched))
    assert len({p.image.tobytes() for p in batched}) == 6


def test_batched_enhancer_over_a_segment_gives_the_one_at_a_time_patches(models, tmp_path):
    """Faces of several frames share an enhancer batch; every frame still gets its own."""
    import cv2

    from facepipe.media.demo import insightface_image
    from facepipe.swap.enhance import enhance_segment
    from facepipe.media.patches import read_patches, write_patches
    from facepipe.media.video import WorkFrame

    img = cv2.resize(cv2.imread(str(insightface_image("t1.jpg"))), (640, 360))
    kps = np.array([[250, 150], [290, 150], [270, 175], [255, 200], [285, 200]], np.float32)
    rng = np.random.default_rng(6)
    swapped = [[Patch("pixels", rng.integers(0, 256, (20, 20, 3), np.uint8), x=260 + 30 * face, y=160,
                      frame=frame, face=face, kps=kps + (60 * face, 0)) for face in range(faces)]
               for frame, faces in ((1, 2), (2, 0), (3, 1), (4, 3))]
    write_patches([p for p in swapped if p], tmp_path / "swapped.parquet")
    frames = lambda: [WorkFrame(n, bgr=np.roll(img, 7 * n, axis=1)) for n in range(1, 6)]  # noqa: E731
    results = []
    for model, batch in ((models["gfpgan_1.4"], 1), (_batched(models, "gfpgan_1.4"), 4)):
        out = tmp_path / f"enhanced_{batch}.parquet"
        assert enhance_segment(frames(), tmp_path / "swapped.parquet", restorer(model, batch_size=batch),
                               out) == 6
        results.append(read_patches(out))
    single, batched = results
    assert sorted(batched) == [1, 3, 4]
    for n in (1, 3, 4):
        kinds = [p.kind for p in batched[n]]
        faces = len(kinds) // 2
        assert kinds == ["pixels"] * faces + ["feathered_crop"] * faces
        assert [(p.frame, p.face) for p in batched[n]] == [(p.frame, p.face) for p in single[n]]
        assert all(np.abs(a.image.astype(int) - b.image.astype(int)).max() <= 1
                   for a, b in zip(single[n], batched[n]))
