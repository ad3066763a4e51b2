"""The whole workflow, end to end, on short clips made by the tests.

The wiring tests pin the stand-in backend (fast, and its logs say STAND-IN); the demo test
runs the default backend=auto, which on a machine without the learned models is the real
offline swap.
"""

import json
import shutil
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
from tests.workflow_helpers import REPO, copy_workflow
from tests.workflow_helpers import frame_before_after, planned_jobs, snakemake, standin_job, write_sheet

from facepipe.media import ffmpeg

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, media_dir):
    """One finished run of job 'clip': a 2 s clip with audio, cut into 1 s segments."""
    wd = standin_job(tmp_path_factory.mktemp("wf"),
                     {"clip.mp4": media_dir / "clip.mp4", "astronaut.png": media_dir / "astronaut.png"},
                     {"name": "clip", "target": "inputs/clip.mp4", "source": "inputs/astronaut.png",
                      "segment_seconds": 1})
    snakemake(wd)
    return wd


def stream_duration(path, kind):
    with av.open(str(path)) as c:
        streams = c.streams.video if kind == "video" else c.streams.audio
        if not streams:
            return None
        s = streams[0]
        first = last = None
        for p in c.demux(s):
            if p.pts is None or p.size == 0:
                continue
            t0 = float(p.pts * p.time_base)
            t1 = t0 + float((p.duration or 0) * p.time_base)
            first = t0 if first is None else min(first, t0)
            last = t1 if last is None else max(last, t1)
        return last - first


def test_output_has_every_frame_and_the_audio(workspace):
    out = workspace / "results" / "clip.mp4"
    manifest = json.loads((workspace / "work/clip/segments/manifest.json").read_text())
    assert manifest["segments"] == {"seg_0000": 25, "seg_0001": 25}
    info = ffmpeg.probe(out)
    assert info.frames == manifest["frames"] == 50
    frame = 1 / float(Fraction(manifest["fps"]))
    assert abs(stream_duration(out, "video") - manifest["frames"] * frame) <= frame
    target_audio = stream_duration(workspace / "inputs/clip.mp4", "audio")
    assert info.has_audio
    assert abs(stream_duration(out, "audio") - target_audio) <= 0.05
    with av.open(str(out)) as c:
        assert "AI-generated" in c.metadata.get("comment", "")


def test_swap_changed_the_face_region_only_where_a_face_was(workspace):
    before, after, patches = frame_before_after(workspace, "clip", workspace / "inputs/clip.mp4", 1)
    assert [p.kind for p in patches] == ["eroded_crop"]
    diff = np.abs(before.astype(int) - after.astype(int)).sum(axis=2) > 0
    assert diff.any()
    assert diff.mean() < 0.5  # a face region, not the whole frame
    logs = (workspace / "logs/clip/swap_faces/seg_0000.log").read_text()
    assert "STAND-IN" in logs and "CPUExecutionProvider" in logs


def test_no_frame_files_between_stages_and_segments_removed_after_mux(workspace):
    work = workspace / "work/clip"
    assert not list(work.rglob("*.png"))
    # Each table with its seal (facepipe.media.integrity), nothing else.
    assert sorted(p.name for p in (work / "swapped").iterdir()) == [
        "seg_0000.parquet", "seg_0000.parquet.sha256", "seg_0001.parquet", "seg_0001.parquet.sha256"]
    # keep_intermediates is false by default: the encoded segments went once the result was muxed.
    assert not (work / "encoded").exists() or not list((work / "encoded").iterdir())


def test_nothing_changed_runs_nothing(workspace):
    assert planned_jobs(workspace) == {}


def test_changing_encoder_settings_reruns_only_rendering(workspace):
    jobs = planned_jobs(workspace, "--config", "crf=30")
    assert jobs == {"render_segment": 2, "mux_video": 1, "all": 1}


def test_changing_enhancer_reruns_only_enhancement_and_after(workspace):
    jobs = planned_jobs(workspace, "--config", "enhancer=gfpgan_1.4")
    assert {"enhance_faces", "render_segment", "mux_video"} <= set(jobs)
    assert set(jobs) <= {"make_standin_model", "make_batched_model", "enhance_faces", "render_segment",
                         "mux_video", "all"}
    assert jobs["enhance_faces"] == 2


def decoded_frames(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]


def test_batch_size_reruns_only_the_swap_and_after_and_gives_the_same_frames(workspace):
    """The swap runs on the batched stand-in by default; one face per call uses the model as
    published. Both must give the very same video."""
    assert (workspace / "resources/models/standin/inswapper_128_batched.onnx").exists()
    assert "batch freed" in (workspace / "logs/models/batched_standin/inswapper_128.log").read_text()
    out = workspace / "results" / "clip.mp4"
    batched = decoded_frames(out)
    jobs = planned_jobs(workspace, "--config", "batch_size=1")
    assert jobs == {"swap_faces": 2, "render_segment": 2, "mux_video": 1, "all": 1}
    try:
        snakemake(workspace, "--config", "batch_size=1")
        single = decoded_frames(out)
    finally:
        snakemake(workspace)  # back to the module's configuration for the tests that follow
    assert len(single) == len(batched) == 50
    assert all(np.array_equal(a, b) for a, b in zip(single, batched))


def test_changing_source_reruns_embedding_swap_and_after_never_preparation_or_detection(workspace):
    other = workspace / "inputs" / "other face.png"
    cv2.imwrite(str(other), cv2.flip(cv2.imread(str(workspace / "inputs/astronaut.png")), 1))
    sheet = write_sheet(workspace / "config" / "jobs_other_source.tsv",
                        [{"name": "clip", "target": "inputs/clip.mp4", "source": "inputs/other face.png",
                          "segment_seconds": 1}])
    jobs = planned_jobs(workspace, "--config", f"jobs={sheet.relative_to(workspace)}")
    assert set(jobs) == {"embed_face", "swap_faces", "render_segment", "mux_video", "all"}
    assert jobs["swap_faces"] == 2


def test_second_job_with_same_source_reuses_cached_embedding(workspace):
    copy = workspace / "inputs" / "same face, other name.png"
    shutil.copy(workspace / "inputs/astronaut.png", copy)
    cached = list((workspace / "resources/embeddings").rglob("*.npz"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    snakemake(workspace, "--config", "target=inputs/clip.mp4", f"source={copy.relative_to(workspace)}",
              "name=second")
    log = (workspace / "logs/second/embed_face_source.log").read_text()
    assert "cache hit" in log and "cache miss" not in log
    assert list((workspace / "resources/embeddings").rglob("*.npz")) == cached
    assert cached[0].stat().st_mtime_ns == mtime


def test_clip_without_audio_gives_output_without_audio(workspace, media_dir):
    shutil.copy(media_dir / "silent.mp4", workspace / "inputs/silent.mp4")
    snakemake(workspace, "--config", "target=inputs/silent.mp4", "source=inputs/astronaut.png", "name=silent")
    info = ffmpeg.probe(workspace / "results/silent.mp4")
    assert not info.has_audio and info.frames == 25


def test_still_image_target(workspace):
    target = workspace / "inputs" / "group photo.jpg"
    from facepipe.media.demo import insightface_image

    shutil.copy(insightface_image("t1.jpg"), target)
    snakemake(workspace, "--config", f"target={target.relative_to(workspace)}", "source=inputs/astronaut.png",
              "name=still")
    out = workspace / "results/still.png"
    img = cv2.imread(str(out))
    assert img.shape == cv2.imread(str(target)).shape
    from PIL import Image

    with Image.open(out) as im:
        assert "AI-generated" in im.info.get("Comment", "")


def test_a_short_video_is_planned_for_the_cores_and_the_plan_kept_with_other_cores(workspace):
    """A 12 s clip is one 30 s segment's worth: on 2 cores it is planned as two 6 s segments, so
    that both cores work on every stage; on 1 core as one. A later run with other cores keeps the
    plan (the cores reach the plan as its job's threads, not as params that would make it again)."""
    long = workspace / "inputs" / "twelve.mp4"
    ffmpeg.run_ffmpeg(["-f", "lavfi", "-i", "testsrc=size=160x90:rate=25", "-t", "12", "-g", "25",
                       "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast", str(long)], what="a 12 s clip")
    config = ["--config", "target=inputs/twelve.mp4", "source=inputs/astronaut.png", "segment_seconds=30"]

    def plan(name):
        return json.loads((workspace / "work" / name / "segments" / "manifest.json").read_text())

    snakemake(workspace, "--until", "prepare_target", *config, "name=split")
    assert plan("split")["segments"] == {"seg_0000": 150, "seg_0001": 150}
    assert plan("split")["planned_for_cores"] == 2
    assert planned_jobs(workspace, "--cores", "1", "--until", "prepare_target", *config, "name=split") == {}
    snakemake(workspace, "--cores", "1", "--until", "prepare_target", *config, "name=whole")
    assert plan("whole")["segments"] == {"seg_0000": 300} and plan("whole")["planned_for_cores"] == 1


def test_bad_config_value_fails_before_any_job(workspace):
    proc = snakemake(workspace, "--config", "crf=high", "--dry-run", check=False)
    assert proc.returncode != 0
    assert "crf" in proc.stderr + proc.stdout


def test_lint_is_clean():
    proc = snakemake(REPO, "--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr


def test_demo_runs_offline_out_of_the_box_and_swaps_for_real(tmp_path):
    """`snakemake --cores 2` on a fresh copy, with no learned model anywhere: the demo job
    (made from photos in installed packages) runs the offline backend to a real video with
    audio, in which the face region changed and the rest of the frame did not."""
    wd = copy_workflow(tmp_path / "demo")
    assert not (wd / "resources" / "models").exists()
    proc = snakemake(wd)
    out = proc.stdout + proc.stderr
    # The fallback is announced once, when the run plans its jobs; the end names the backend that ran.
    assert out.count("backend OFFLINE runs") == 1 and "snakemake --cores all fetch_models" in out
    assert "backend offline: demo" in out

    info = ffmpeg.probe(wd / "results/demo.mp4")
    assert info.has_audio and info.frames == 100 and (info.width, info.height) == (640, 360)
    logs = "".join(p.read_text() for p in (wd / "logs").rglob("*.log"))
    assert "detect_faces" in logs and "STAND-IN" not in logs
    # One segment on two cores: its detection and its offline swap each take both (worker processes).
    for stage in ("detect_faces", "swap_faces"):
        assert "threads 2," in (wd / "logs/demo" / stage / "seg_0000.log").read_text(), stage

    # Frame 50 before and after the swap: the largest face (faces=one) changed inside its
    # landmark hull, nothing outside a dilated hull changed.
    from facepipe.models.classic_swap import face_mask
    from facepipe.faces.detection import read_faces

    before, after, patches = frame_before_after(wd, "demo", wd / "resources/demo/target.mp4", 50)
    assert [p.kind for p in patches] == ["pixels"]
    faces = read_faces(wd / "work/demo/faces/seg_0000.parquet")
    row = faces[(faces["frame"] == 50) & (faces["face"] == patches[0].face)].iloc[0]
    # The demo's face is large enough to see the swap at normal size, on every frame, and it turns:
    # its eye line tilts through several degrees over the clip.
    assert faces["frame"].nunique() == 100 and (faces["y2"] - faces["y1"]).min() >= 150
    eyes = np.stack([np.asarray(k).reshape(5, 2)[:2] for k in faces["kps"]])
    tilt = np.degrees(np.arctan2(eyes[:, 1, 1] - eyes[:, 0, 1], eyes[:, 1, 0] - eyes[:, 0, 0]))
    assert np.ptp(tilt) > 4, np.ptp(tilt)
    hull = face_mask(np.asarray(row.landmarks).reshape(-1, 2), before.shape[:2])
    diff = np.abs(before.astype(int) - after.astype(int)).sum(axis=2)
    assert diff[hull > 0].mean() > 10
    assert not diff[cv2.dilate(hull, np.ones((7, 7), np.uint8)) == 0].any()

    # The encoded video shows the change too (through lossy encoding: a clear difference
    # in the face box, little elsewhere).
    with av.open(str(wd / "results/demo.mp4")) as c:
        encoded = next(f for i, f in enumerate(c.decode(video=0)) if i == 49).to_ndarray(format="bgr24")
    x1, y1, x2, y2 = (int(v) for v in (row.x1, row.y1, row.x2, row.y2))
    enc_diff = np.abs(encoded.astype(int) - before.astype(int)).mean(axis=2)
    box = np.zeros(before.shape[:2], bool)
    box[y1:y2, x1:x2] = True
    assert enc_diff[box].mean() > 3 * enc_diff[~box].mean()

    # The resolved backend is what the rules record: switching it reruns detection onwards,
    # never the preparation.
    jobs = planned_jobs(wd, "--config", "backend=standin")
    assert {"detect_faces", "embed_face", "swap_faces", "mux_video"} <= set(jobs)
    assert "prepare_target" not in jobs
    # The command the warning names fetches the learned models the job would use: detector,
    # recognizer, swapper and the occluder of the default face_mask (no enhancer chosen).
    assert planned_jobs(wd, "fetch_models") == {"fetch_model": 4, "fetch_models": 1}
