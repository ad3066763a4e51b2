"""Nothing breaks, nothing is lost: bad inputs, awkward inputs, hostile names, interrupts, GPU faults.

Workflow runs use the stand-in backend: these tests are about the plumbing, not the faces.
"""

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from tests.workflow_helpers import copy_workflow
from tests.workflow_helpers import fault_env, snakemake, write_sheet

from facepipe.media import demo, ffmpeg as media_ffmpeg, files, video
from facepipe.faces.detection import pick_face
from facepipe.models.face_analyzer import FaceError
from tools.slurmprobe import env_for_local_snakemake

pytestmark = pytest.mark.workflow
STANDIN = ("backend=standin",)
# The interrupted job: two segments, enhancer on, so every heavy stage is in the DAG.
FAULT_CONFIG = ("segment_seconds=1", "enhancer=gfpgan_1.4")


@pytest.fixture(scope="module")
def wd(tmp_path_factory, media_dir):
    wd = copy_workflow(tmp_path_factory.mktemp("robust"))
    (wd / "inputs").mkdir()
    for f in ("clip.mp4", "silent.mp4", "astronaut.png"):
        shutil.copy(media_dir / f, wd / "inputs" / f)
    return wd


def run_job(wd, target, name, *extra, source="inputs/astronaut.png", check=True):
    return snakemake(wd, "--config", f"target={target}", f"source={source}", f"name={name}", *STANDIN, *extra,
                     check=check)


def decoded_frames(path, fmt="rgb24") -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format=fmt) for f in c.decode(video=0)]


def ffmpeg(*args):
    media_ffmpeg.run_ffmpeg([str(a) for a in args], what="making a test input")


# --- bad input: a clear error naming the file, non-zero exit, no final output ----------------------

@pytest.mark.parametrize("kind", ["missing", "text", "empty"])
def test_bad_target_is_a_clear_error_and_leaves_no_output(wd, kind):
    target = wd / "inputs" / f"bad {kind}.mp4"
    if kind == "text":
        target.write_text("this is a shopping list, not a video\n" * 20)
    elif kind == "empty":
        target.write_bytes(b"")
    proc = run_job(wd, target.relative_to(wd), f"bad_{kind}", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"bad {kind}.mp4" in out
    assert {"missing": "no such file", "text": "not a readable", "empty": "empty"}[kind] in out
    assert not (wd / "results" / f"bad_{kind}.mp4").exists()
    if kind != "missing":
        assert target.exists()  # the user's file is untouched


def test_truncated_video_processes_the_readable_frames_and_says_how_many_were_lost(tmp_path, caplog):
    full = demo.make_clip(demo.insightface_image(), tmp_path / "full.mp4", seconds=2, size=(320, 180),
                          extra=["-movflags", "+faststart"])
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with caplog.at_level(logging.WARNING):
        info = media_ffmpeg.probe(cut)
        manifest = video.plan_segments(cut, info.__dict__, tmp_path / "seg", max_height=0, fps=0,
                                       segment_seconds=10)
    assert info.lost_frames > 0 and manifest["lost_frames"] >= info.lost_frames
    assert 0 < manifest["frames"] < 50
    assert "lost" in caplog.text and "truncated" in caplog.text


def test_missing_source_is_a_clear_error(wd):
    proc = run_job(wd, "inputs/clip.mp4", "nosource", source="inputs/no such face.png", check=False)
    assert proc.returncode != 0
    assert "no such face.png" in proc.stdout + proc.stderr
    assert not (wd / "results/nosource.mp4").exists()


def test_cut_video_without_index_is_a_clear_error(tmp_path):
    full = demo.make_clip(demo.insightface_image(), tmp_path / "full.mp4", seconds=1, size=(320, 180))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(files.MediaError, match="cut.mp4.*not a readable"):
        media_ffmpeg.probe(cut)


def test_source_without_a_face_fails_before_the_swap(wd):
    flat = wd / "inputs" / "wall.png"
    cv2.imwrite(str(flat), np.full((256, 256, 3), 127, np.uint8))
    proc = run_job(wd, "inputs/clip.mp4", "noface", source="inputs/wall.png", check=False)
    assert proc.returncode != 0
    assert "no face found in image" in proc.stderr and "wall.png" in proc.stderr
    assert not (wd / "logs/noface/swap_faces").exists()
    assert not (wd / "results/noface.mp4").exists()


def test_several_source_faces_use_the_largest_or_the_chosen_one(caplog):
    faces = [{"box": np.array([0, 0, 50, 50])}, {"box": np.array([0, 0, 20, 20])}]
    with caplog.at_level(logging.WARNING):
        assert pick_face(faces, "group.png") is faces[0]
    assert "2 faces" in caplog.text and "largest" in caplog.text
    assert pick_face(faces, "group.png", 1) is faces[1]
    with pytest.raises(FaceError, match="source_face=2"):
        pick_face(faces, "group.png", 2)


def test_malformed_jobs_sheet_names_row_and_column(wd):
    sheet = write_sheet(wd / "config" / "bad_sheet.tsv",
                        [{"name": "ok", "target": "inputs/clip.mp4", "source": "inputs/astronaut.png", "crf": 18},
                         {"name": "bad", "target": "inputs/clip.mp4", "source": "inputs/astronaut.png",
                          "crf": 99}])
    proc = snakemake(wd, "--dry-run", "--config", f"jobs={sheet.relative_to(wd)}", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "row 2, column 'crf': 99 is not allowed" in out  # the second data row


def test_bad_config_value_is_rejected_with_the_schema_message(wd):
    proc = snakemake(wd, "--dry-run", "--config", "faces=all", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "configuration key 'faces': 'all' is not allowed; allowed values: one, many, reference" in out


# --- awkward but valid input ---------------------------------------------------------------------

def _awkward_inputs(d: Path) -> dict[str, Path]:
    t1 = demo.insightface_image()
    made = {}
    made["odd"] = d / "odd.mkv"
    ffmpeg("-loop", "1", "-i", t1, "-vf", "scale=641:361,setsar=1", "-frames:v", "10", "-r", "25", "-c:v", "ffv1",
           made["odd"])
    made["rotated"] = d / "rotated.mp4"
    plain = demo.make_clip(t1, d / "plain.mp4", seconds=0.6, size=(320, 180))
    ffmpeg("-display_rotation", "90", "-i", plain, "-c", "copy", made["rotated"])
    made["vfr"] = d / "vfr.mp4"
    ffmpeg("-i", plain, "-vf", "setpts='(N+0.4*mod(N,3))/25/TB'", "-fps_mode", "passthrough", "-an",
           "-c:v", "libx264", made["vfr"])
    made["tenbit"] = d / "tenbit.mp4"
    ffmpeg("-i", plain, "-pix_fmt", "yuv420p10le", "-c:v", "libx264", "-c:a", "copy", made["tenbit"])
    # DVD-style anamorphic (each stored pixel 4/3 as wide as tall, shown at 320x180), labelled BT.709,
    # which a player shows in other colours than the unlabelled 320x180 it was made from (BT.601).
    made["anamorphic"] = d / "anamorphic.mp4"
    ffmpeg("-i", plain, "-vf", "scale=240:180,setsar=4/3,setparams=colorspace=bt709:color_primaries=bt709:"
           "color_trc=bt709", "-c:v", "libx264", "-c:a", "copy", made["anamorphic"])
    # A cut-out still: a clear border whose hidden colour is black, as cut-outs often hold.
    made["cutout"] = d / "cutout.png"
    portrait = cv2.resize(cv2.imread(str(t1)), (320, 222), interpolation=cv2.INTER_AREA)
    alpha = np.zeros(portrait.shape[:2], np.uint8)
    alpha[20:-20, 30:-30] = 255
    alpha[20:-20, 30:40] = 128
    portrait[alpha == 0] = 0
    cv2.imwrite(str(made["cutout"]), np.dstack([portrait, alpha]))
    made["interlaced"] = d / "interlaced.mp4"
    ffmpeg("-i", plain, "-vf", "tinterlace=interleave_top,fieldorder=tff", "-flags", "+ildct+ilme", "-c:v", "libx264",
           "-x264-params", "tff=1", "-c:a", "copy", made["interlaced"])
    made["oneframe"] = d / "oneframe.mp4"
    ffmpeg("-i", plain, "-frames:v", "1", "-an", "-c:v", "libx264", made["oneframe"])
    # What phones, the web and editors hand over besides H.264 in MP4: an iPhone's HEVC, 10-bit HLG
    # (BT.2020) in a MOV, held upright; VP9 with Opus in WebM (a web download); AV1; ProRes 4:2:2
    # 10-bit with 24-bit PCM (an editor's export); Motion JPEG (full range) with 16-bit PCM in AVI
    # (an older camera). Each decodes differently (10-bit, 4:2:2, full range, other containers).
    made["iphone"] = d / "iphone.mov"
    ffmpeg("-display_rotation", "90", "-noautorotate", "-i", plain, "-pix_fmt", "yuv420p10le", "-c:v", "libx265",
           "-x265-params", "log-level=error:colorprim=bt2020:transfer=arib-std-b67:colormatrix=bt2020nc",
           "-tag:v", "hvc1", "-c:a", "copy", made["iphone"])
    made["webm"] = d / "web.webm"
    ffmpeg("-i", plain, "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "500k",
           "-c:a", "libopus", made["webm"])
    made["av1"] = d / "av1.mp4"
    ffmpeg("-i", plain, "-c:v", "libsvtav1", "-preset", "11", "-svtav1-params", "log-level=0", "-c:a", "copy",
           made["av1"])
    made["prores"] = d / "prores.mov"
    ffmpeg("-i", plain, "-c:v", "prores_ks", "-profile:v", "2", "-c:a", "pcm_s24le", made["prores"])
    made["mjpeg"] = d / "mjpeg.avi"
    ffmpeg("-i", plain, "-c:v", "mjpeg", "-q:v", "3", "-c:a", "pcm_s16le", made["mjpeg"])
    made["noface"] = d / "noface.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=black:size=320x180:rate=25", "-f", "lavfi", "-i",
           "sine=frequency=220:sample_rate=48000", "-t", "0.6", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-c:a", "aac", made["noface"])
    return made


@pytest.fixture(scope="module")
def awkward(wd):
    made = _awkward_inputs(wd / "inputs")
    # One job's source is an iPhone photo's format (HEIC), which OpenCV does not decode.
    from PIL import Image
    from pillow_heif import register_heif_opener

    register_heif_opener()
    Image.open(wd / "inputs/astronaut.png").convert("RGB").save(wd / "inputs/astronaut.heic", quality=90)
    rows = [{"name": k, "target": str(v.relative_to(wd)),
             "source": "inputs/astronaut.heic" if k == "cutout" else "inputs/astronaut.png",
             "segment_seconds": 10} for k, v in made.items()]
    sheet = write_sheet(wd / "config" / "awkward.tsv", rows)
    snakemake(wd, "--config", f"jobs={sheet.relative_to(wd)}", *STANDIN)
    return made


@pytest.mark.parametrize("name", ["odd", "rotated", "vfr", "tenbit", "anamorphic", "interlaced", "oneframe",
                                  "noface", "iphone", "webm", "av1", "prores", "mjpeg"])
def test_awkward_video_works(wd, awkward, name):
    out = wd / "results" / f"{name}.mp4"
    manifest = files.read_json(wd / f"work/{name}/segments/manifest.json")
    info = media_ffmpeg.probe(out)
    assert info.frames == manifest["frames"] > 0
    assert info.width % 2 == 0 and info.height % 2 == 0
    if name == "odd":
        assert (info.width, info.height) == (640, 360)
    if name in ("rotated", "iphone"):
        assert info.height > info.width  # the upright picture, not the stored one
    if name == "iphone":
        # Shown as the target is: BT.2020 with HLG's transfer, not relabelled as SDR.
        assert (info.colour["matrix"], info.colour["primaries"], info.colour["transfer"]) == (9, 9, 18)
    if name == "vfr":
        assert abs(info.duration - media_ffmpeg.probe(awkward["vfr"]).duration) < 0.1
    if name == "interlaced":
        assert "interlaced" in manifest["transcoded_because"] and not info.interlaced
    assert info.has_audio == media_ffmpeg.probe(awkward[name]).has_audio
    if name in ("iphone", "webm", "av1", "prores", "mjpeg"):
        # Decoded, swapped and put back: the stand-in finds its face on every frame of these.
        logged = " ".join(p.read_text() for p in (wd / "logs" / name / "render_segment").glob("*.log"))
        assert f"{manifest['frames']} frames encoded, {manifest['frames']} with face patches" in logged


def test_anamorphic_labelled_video_is_shown_in_its_shape_and_colours(wd, awkward):
    """A player shows the result as it shows the target: at 16:9, not squeezed to the stored 4:3,
    and in the target's colours (its BT.709 label kept, not dropped for the BT.601 guessed at this size)."""
    info = media_ffmpeg.probe(wd / "results/anamorphic.mp4")
    assert (info.width, info.height) == (320, 180) and Fraction(info.sample_aspect) == 1
    assert (info.colour["matrix"], info.colour["primaries"], info.colour["transfer"]) == (1, 1, 1)
    # As a player shows them (PyAV converts by each file's label), the target stretched to 16:9.
    target = [cv2.resize(f, (320, 180), interpolation=cv2.INTER_AREA)
              for f in decoded_frames(awkward["anamorphic"], "bgr24")]
    result = decoded_frames(wd / "results/anamorphic.mp4", "bgr24")
    # The mean difference over what the stand-in swap left alone (its face differs by far more than
    # 30): an unlabelled result, shown by the BT.601 guess, is 3 levels off (red up, blue down).
    differences = [(r.astype(float) - t).reshape(-1, 3) for t, r in zip(target, result)]
    shift = np.mean([d[np.abs(d).max(axis=1) < 30].mean(axis=0) for d in differences], axis=0)
    assert np.abs(shift).max() < 1.0, shift


def test_a_cut_out_still_keeps_its_transparency(wd, awkward):
    """(Its source is a HEIC photo: the run's checks and its source embedding read it.)"""
    target = cv2.imread(str(awkward["cutout"]), cv2.IMREAD_UNCHANGED)
    result = cv2.imread(str(wd / "results/cutout.png"), cv2.IMREAD_UNCHANGED)
    assert result.shape == target.shape == (222, 320, 4)
    assert np.array_equal(result[..., 3], target[..., 3])


def test_video_without_faces_gets_no_patches_and_its_frames_pass_through(wd, awkward):
    from facepipe.media.patches import read_patches

    assert read_patches(wd / "work/noface/swapped/seg_0000.parquet") == {}
    manifest = files.read_json(wd / "work/noface/segments/manifest.json")
    frames = list(video.iter_frames(awkward["noface"], wd / "work/noface/segments", manifest, "seg_0000"))
    out = decoded_frames(wd / "results/noface.mp4", "bgr24")
    assert len(frames) == len(out) > 0
    # Only the lossy encode between them: the decoded input and the result agree closely.
    assert max(np.abs(f.bgr().astype(int) - o.astype(int)).mean() for f, o in zip(frames, out)) < 3


def test_hostile_names_are_data_never_shell(wd):
    hostile = "a;touch PWNED;$(touch PWNED2) `touch PWNED3` it's \"q\" été"
    target = wd / "inputs" / f"{hostile}.mp4"
    shutil.copy(wd / "inputs/silent.mp4", target)
    source = wd / "inputs" / f"{hostile} face.png"
    shutil.copy(wd / "inputs/astronaut.png", source)
    run_job(wd, target.relative_to(wd), hostile, source=str(source.relative_to(wd)))
    assert media_ffmpeg.probe(wd / "results" / f"{hostile}.mp4").frames == 25
    assert not list(wd.rglob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))


# --- faults --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, media_dir):
    """An uninterrupted run of a 2-segment job, to compare interrupted runs against."""
    wd = copy_workflow(tmp_path_factory.mktemp("reference"))
    shutil.copy(media_dir / "astronaut.png", wd / "astronaut.png")
    demo.make_clip(demo.insightface_image(), wd / "long.mp4", seconds=2, size=(320, 180))
    run_job(wd, "long.mp4", "long", *FAULT_CONFIG, source="astronaut.png")
    return wd


def test_two_runs_give_identical_frames(reference_run, tmp_path):
    other = copy_workflow(tmp_path / "again")
    for f in ("astronaut.png", "long.mp4"):
        shutil.copy(reference_run / f, other / f)
    run_job(other, "long.mp4", "long", *FAULT_CONFIG, source="astronaut.png")
    a = decoded_frames(reference_run / "results/long.mp4")
    b = decoded_frames(other / "results/long.mp4")
    assert len(a) == len(b) == 50
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
@pytest.mark.parametrize("stage", ["prepare_target", "detect_faces", "swap_faces", "enhance_faces",
                                   "render_segment"])
def test_interrupted_run_resumes_to_identical_output(reference_run, tmp_path, sig, stage):
    wd = copy_workflow(tmp_path / "interrupted")
    for f in ("astronaut.png", "long.mp4"):
        shutil.copy(reference_run / f, wd / f)
    args = ["--config", "target=long.mp4", "source=astronaut.png", "name=long", *FAULT_CONFIG, *STANDIN]
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "1", *args], cwd=wd,
                            env=env_for_local_snakemake(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    logs = wd / "logs" / "long" / stage
    started = (lambda: logs.with_suffix(".log").exists()) if stage == "prepare_target" else (
        lambda: logs.exists() and any(logs.iterdir()))
    deadline = time.time() + 240
    while not started():
        assert proc.poll() is None, "the run ended before reaching the stage"
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(0.3)  # inside the stage's script
    if sig == signal.SIGKILL:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole process group, as a node losing power would
    else:
        os.kill(proc.pid, signal.SIGINT)
    proc.wait(timeout=120)
    if sig == signal.SIGINT:
        assert not list((wd / ".snakemake/locks").glob("*")), "stale lock after SIGINT"
    first = snakemake(wd, *args, check=False)
    if first.returncode != 0:
        assert "--rerun-incomplete" in first.stdout + first.stderr, first.stderr[-3000:]
        snakemake(wd, "--rerun-incomplete", *args)
    a = decoded_frames(reference_run / "results/long.mp4")
    b = decoded_frames(wd / "results/long.mp4")
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_gpu_failure_is_retried_degraded_and_listed(reference_run, tmp_path):
    wd = copy_workflow(tmp_path / "oom")
    for f in ("astronaut.png", "long.mp4"):
        shutil.copy(reference_run / f, wd / f)
    env_args = ["--config", "target=long.mp4", "source=astronaut.png", "name=long", "segment_seconds=1",
                "degrade=[resolution,fp16,no_enhancer]", *STANDIN]
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *env_args], cwd=wd,
                          capture_output=True, text=True, timeout=600,
                          env={**env_for_local_snakemake(),
                               **fault_env(FACEPIPE_TEST_INJECT_GPU_OOM="detect_faces,swap_faces")})
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = (wd / "logs/long/detect_faces/seg_0000.log").read_text()
    assert "degraded" in log and "resolution" in log  # the configured order: resolution first
    swap_log = (wd / "logs/long/swap_faces/seg_0000.log").read_text()
    # The retried swap also gave up its batches: the swapper says how many faces go per call.
    assert "one face per model call" in swap_log and "1 face(s) per call" in swap_log
    assert "GPU jobs that ran degraded" in proc.stderr
    assert "detect_faces-seg_0000: resolution" in proc.stderr
    assert media_ffmpeg.probe(wd / "results/long.mp4").frames == 50
