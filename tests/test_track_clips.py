"""The tracking test clip (tests/track_clips.py) is what it claims to be, as the offline backend
(dlib HOG detection, 68 landmarks, 128-D identity) sees it after H.264 compression: both people
found wherever they are meant to be visible, missed wherever they are meant to be hidden, told
apart by identity, B the larger face on some frames of shot 1, and a tone track."""

import multiprocessing
import time

import av
import numpy as np
import pytest

from tests.hog_analyzer import OfflineAnalyzer, landmarks_model_path, embedding_distance
from facepipe.models.dlib_face import offline_model_path
from tests.track_clips import PERSONS, make_tracking_clip

_analyzer: OfflineAnalyzer | None = None


def _analyze(img: np.ndarray) -> list[dict]:
    return _analyzer.analyze(img)


def iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """(truth, decoded frames, faces per frame, container facts, seconds taken)."""
    global _analyzer
    start = time.monotonic()
    truth = make_tracking_clip(tmp_path_factory.mktemp("track") / "tracking.mp4")
    made = time.monotonic() - start
    _analyzer = OfflineAnalyzer(landmarks_model_path(), offline_model_path("dlib_resnet_v1"),
                                threads=1)
    # Workers are forked before any frame is decoded (the decoder runs threads of its own);
    # each inherits the loaded models.
    with multiprocessing.get_context("fork").Pool(2) as pool:
        with av.open(str(truth.path)) as container:
            video = container.streams.video[0]
            facts = {"audio": [(s.codec_context.name, s.sample_rate) for s in container.streams.audio],
                     "audio_seconds": [float(s.duration * s.time_base) for s in container.streams.audio],
                     "video_seconds": float(video.duration * video.time_base),
                     "stream_frames": video.frames, "size": (video.codec_context.width, video.codec_context.height),
                     "pix_fmt": video.codec_context.pix_fmt, "codec": video.codec_context.name,
                     "rate": video.average_rate}
            frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
        faces = pool.map(_analyze, frames, chunksize=4)
    took = time.monotonic() - start
    print(f"tracking clip: made in {made:.1f} s, made and analysed in {took:.1f} s")
    return truth, frames, faces, facts


def test_container_has_the_frames_it_reports_and_a_tone(clip):
    truth, frames, _, facts = clip
    assert len(frames) == truth.frames == facts["stream_frames"]
    assert facts["size"] == truth.size and frames[0].shape == (truth.size[1], truth.size[0], 3)
    assert facts["codec"] == "h264" and facts["pix_fmt"] == "yuv420p" and facts["rate"] == truth.fps
    assert facts["audio"] == [("aac", 48000)]
    seconds = truth.frames / truth.fps
    assert abs(facts["video_seconds"] - seconds) < 0.05 and abs(facts["audio_seconds"][0] - seconds) < 0.1
    assert 1 < truth.cut <= truth.frames
    # Shot 1 is ~3 s, shot 2 ~1.5 s.
    assert abs((truth.cut - 1) / truth.fps - 3.0) < 0.1 and abs((truth.frames - truth.cut + 1) / truth.fps - 1.5) < 0.1


def test_timeline_is_as_documented(clip):
    truth = clip[0]
    for person in PERSONS:
        assert all(truth.box(person, f) is not None for f in range(1, truth.frames + 1))
        hidden = sorted(truth.hidden[person])
        assert hidden and all(f < truth.cut - 10 for f in hidden)
    # A: a 3-frame blur run and a 3-frame cover run, >= 10 frames apart; B: a 2-frame blur run.
    how = truth.hidden_how
    a_blur = sorted(f for f in truth.hidden["A"] if how[("A", f)] == "blur")
    a_cover = sorted(f for f in truth.hidden["A"] if how[("A", f)] == "cover")
    b_blur = sorted(truth.hidden["B"])
    for run, n in ((a_blur, 3), (a_cover, 3), (b_blur, 2)):
        assert len(run) == n and run == list(range(run[0], run[0] + n))
    starts = sorted([a_blur, a_cover, b_blur])
    for before, after in zip(starts, starts[1:]):
        assert after[0] - before[-1] > 10
    # The faces never overlap; A and B change places over shot 1 and again at the cut.
    for f in range(1, truth.frames + 1):
        assert iou(truth.box("A", f), truth.box("B", f)) == 0

    def cx(person, f):
        b = truth.box(person, f)
        return (b[0] + b[2]) / 2

    assert cx("A", 1) < cx("B", 1) and cx("A", truth.cut - 1) > cx("B", truth.cut - 1)
    for person in PERSONS:  # a real jump at the cut: the boxes before and after barely meet
        assert iou(truth.box(person, truth.cut - 1), truth.box(person, truth.cut)) < 0.2
    # A is the larger presence over the whole clip, B the larger face on some frames of shot 1.
    total = {p: sum(truth.area(p, f) for f in range(1, truth.frames + 1)) for p in PERSONS}
    assert total["A"] > 1.1 * total["B"]
    assert len(truth.b_larger()) >= 5


def test_detector_finds_every_visible_face_and_misses_every_hidden_one(clip):
    truth, _, faces, _ = clip
    missed, found, spurious = [], [], []
    for f, dets in enumerate(faces, start=1):
        for person in PERSONS:
            box = truth.box(person, f)
            best = max((iou(box, d["box"]) for d in dets), default=0.0)
            if f in truth.hidden[person]:
                if best >= 0.2:
                    found.append((person, f, round(best, 2)))
            elif best < 0.4:
                missed.append((person, f, round(best, 2)))
        for d in dets:
            if all(iou(truth.box(p, f), d["box"]) < 0.2 for p in PERSONS):
                spurious.append((f, d["box"].tolist()))
    assert not missed, f"visible faces the detector missed (person, frame, best IoU): {missed}"
    assert not found, f"hidden faces the detector found (person, frame, IoU): {found}"
    assert not spurious, f"detections of no one (frame, box): {spurious}"


def test_b_is_the_larger_detected_face_on_some_frames_of_shot_1(clip):
    truth, _, faces, _ = clip
    both = [f for f in truth.b_larger()
            if all(max((iou(truth.box(p, f), d["box"]) for d in faces[f - 1]), default=0) >= 0.4 for p in PERSONS)]
    assert len(both) >= 5, both
    # ...and the detector sees it so too where B is clearly larger: B's detection is the largest.
    clearly = [f for f in both if truth.area("B", f) > 1.6 * truth.area("A", f)]
    assert len(clearly) >= 5, clearly
    for f in clearly:
        largest = faces[f - 1][0]
        assert iou(truth.box("B", f), largest["box"]) >= 0.4


def test_identity_embeddings_tell_a_from_b(clip):
    truth, _, faces, _ = clip
    emb = {p: [] for p in PERSONS}
    for f, dets in enumerate(faces, start=1):
        for person in PERSONS:
            matches = [d for d in dets if iou(truth.box(person, f), d["box"]) >= 0.4]
            if matches:
                emb[person].append(matches[0]["embedding"])
    a, b = (np.array(emb[p]) for p in PERSONS)
    assert len(a) >= truth.frames - 8 and len(b) >= truth.frames - 4

    def dists(x, y):
        return np.array([[embedding_distance(u, v) for v in y] for u in x])

    aa, bb, ab = dists(a, a), dists(b, b), dists(a, b)
    same = np.concatenate([aa[np.triu_indices(len(a), 1)], bb[np.triu_indices(len(b), 1)]])
    # The same person (across both shots, all sizes and positions) is mostly within 0.5 of
    # itself; the two people are further apart than any two frames of one of them.
    assert np.mean(same < 0.5) >= 0.95, np.percentile(same, [50, 95, 100])
    assert ab.min() > max(aa.max(), bb.max()), (ab.min(), aa.max(), bb.max())
    # Each face is nearer its own person's mean than the other's.
    ma, mb = a.mean(axis=0), b.mean(axis=0)
    assert all(embedding_distance(e, ma) < embedding_distance(e, mb) for e in a)
    assert all(embedding_distance(e, mb) < embedding_distance(e, ma) for e in b)
