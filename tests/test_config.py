"""Configuration and jobs that would go wrong are stopped before any job runs, with one clear line;
awkward but valid ones (a .jfif still, a long file name, # in a cell) work."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from tests.workflow_helpers import copy_workflow
from tests.workflow_helpers import pin_backend, snakemake, write_sheet

from facepipe.workflow.jobs import JobError, build_jobs, check_config, read_sheet
from facepipe.workflow.preflight import PreflightError, check_encoder, check_input_files, check_jobs, target_kind
from tests.test_jobs import CONFIG

SCHEMA = "config/schemas/config.schema.yaml"


# --- unit ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("typo, nearest", [("enhacer", "enhancer"), ("max_heigth", "max_height")])
def test_unknown_config_key_names_the_nearest(typo, nearest):
    from tests.workflow_helpers import REPO

    with pytest.raises(JobError, match=f"unknown configuration key '{typo}'.*did you mean '{nearest}'"):
        check_config({"crf": 18, typo: 1}, REPO / SCHEMA)


@pytest.mark.parametrize("word, value", [("true", True), ("False", False), ("yes", True), ("0", False)])
def test_booleans_read_as_written(word, value):
    from tests.workflow_helpers import REPO

    config = {"keep_intermediates": word}
    check_config(config, REPO / SCHEMA)
    assert config["keep_intermediates"] is value


def test_unknown_sheet_column_names_the_nearest(tmp_path):
    sheet = tmp_path / "jobs.tsv"
    sheet.write_text("name\ttarget\tsource\tenhacer\nx\ta.mp4\tb.png\tgfpgan_1.4\n")
    with pytest.raises(JobError, match="unknown column 'enhacer'.*did you mean 'enhancer'"):
        read_sheet(sheet)


def test_hash_in_a_cell_is_data_and_comment_lines_are_skipped(tmp_path):
    sheet = tmp_path / "jobs.tsv"
    sheet.write_text("# my jobs\nname\ttarget\tsource\ttake #2\tclips/take #2.mp4\tfaces/#1.png\n"
                     .replace("\ttake #2\t", "\ntake #2\t"))
    jobs = build_jobs(CONFIG, read_sheet(sheet))
    assert jobs["take #2"]["target"] == "clips/take #2.mp4"
    assert jobs["take #2"]["source"] == "faces/#1.png"


def test_same_file_name_in_two_folders_without_names_is_an_error(tmp_path):
    sheet = tmp_path / "jobs.tsv"
    sheet.write_text("target\tsource\na/clip.mp4\ts.png\nb/clip.mp4\ts.png\n")
    with pytest.raises(JobError, match=r"rows 1 and 2 would both write results/clip\.\*"):
        build_jobs(CONFIG, read_sheet(sheet))
    sheet.write_text("name\ttarget\tsource\none\ta/clip.mp4\ts.png\ntwo\tb/clip.mp4\ts.png\n")
    assert list(build_jobs(CONFIG, read_sheet(sheet))) == ["one", "two"]


def test_target_kind_by_content(tmp_path):
    img = np.full((8, 8, 3), 128, np.uint8)
    jfif = tmp_path / "photo.jfif"
    jfif.write_bytes(cv2.imencode(".jpg", img)[1].tobytes())
    assert target_kind(jfif) == "image"
    fake = tmp_path / "movie.png"
    fake.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(100))
    assert target_kind(fake) == "video"
    assert target_kind(tmp_path / "not-yet.png") == "image"


def test_undecodable_heic_still_fails_before_the_work(tmp_path):
    heic = tmp_path / "IMG_0001.heic"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200))
    job = {"target": str(heic), "source": "s.png", "encoder": "libx264", "preset": "veryfast", "crf": 18}
    with pytest.raises(PreflightError, match="IMG_0001.heic.*HEIF still image.*convert it to PNG or JPEG"):
        check_input_files("h", job)
    check_input_files("h", job, made_by_workflow=lambda path: True)  # a rule's file: its rule's business


def test_a_source_that_is_not_a_decodable_still_fails_before_the_work(tmp_path, media_dir):
    job = {"target": str(media_dir / "silent.mp4"), "encoder": "libx264", "preset": "veryfast", "crf": 18}
    video = tmp_path / "face.png"
    video.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(100))
    with pytest.raises(PreflightError, match="source file .*face.png' is not a still image"):
        check_input_files("j", {**job, "source": str(video)})
    still = tmp_path / "face.jpg"
    cv2.imwrite(str(still), np.full((8, 8, 3), 128, np.uint8))
    heic = tmp_path / "IMG_0002.HEIC"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200))
    with pytest.raises(PreflightError, match="reference file .*IMG_0002.HEIC' is a HEIF image.*convert it"):
        check_input_files("j", {**job, "source": str(still), "reference": str(heic)})


def test_missing_encoder_and_bad_preset_fail_before_the_work():
    with pytest.raises(PreflightError, match="Unknown encoder 'libnothing'"):
        check_encoder("libnothing", "", 18)
    with pytest.raises(PreflightError, match="invalid preset"):
        check_encoder("libx264", "fastest", 18)
    check_encoder("libx264", "veryfast", 18)


def test_inputs_inside_results_or_work_are_errors(tmp_path):
    job = {"target": "results/clip.mp4", "source": "s.png", "encoder": "libx264", "preset": "", "crf": 18}
    with pytest.raises(PreflightError, match="lies inside results/"):
        check_jobs({"clip": job}, tmp_path)
    with pytest.raises(PreflightError, match="source 'work/x/face.png' lies inside work/"):
        check_jobs({"clip": {**job, "target": "in/clip.mp4", "source": "work/x/face.png"}}, tmp_path)


def test_a_name_too_long_for_the_file_system_fails_before_the_work(tmp_path):
    job = {"target": "in/clip.mp4", "source": "s.png", "encoder": "libx264", "preset": "", "crf": 18}
    with pytest.raises(PreflightError, match="exceed this file system's limit"):
        check_jobs({"x" * 253: job}, tmp_path)


# --- workflow ------------------------------------------------------------------------------------

@pytest.fixture()
def wd(tmp_path, media_dir):
    wd = copy_workflow(tmp_path / "wf")
    pin_backend(wd, "standin")
    (wd / "inputs").mkdir()
    shutil.copy(media_dir / "silent.mp4", wd / "inputs" / "clip.mp4")
    shutil.copy(media_dir / "astronaut.png", wd / "inputs" / "face.png")
    return wd


def fails_before_any_job(wd, *args, expect):
    proc = snakemake(wd, *args, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert expect in out, out[-3000:]
    assert not (wd / "logs").exists() and not (wd / "results").exists()
    return out


@pytest.mark.workflow
@pytest.mark.parametrize("args, expect", [
    (["enhacer=gfpgan_1.4"], "did you mean 'enhancer'"),
    (["max_heigth=240"], "did you mean 'max_height'"),
    (["encoder=libnothing"], "Unknown encoder 'libnothing'"),
    (["target=results/clip.mp4", "source=inputs/face.png"], "lies inside results/"),
])
def test_mistakes_stop_the_run_before_any_job(wd, args, expect):
    if "target=results/clip.mp4" in args:
        (wd / "results").mkdir()
        shutil.copy(wd / "inputs" / "clip.mp4", wd / "results" / "clip.mp4")
        proc = snakemake(wd, "--config", *args, check=False)
        assert proc.returncode != 0 and expect in proc.stdout + proc.stderr
        assert not (wd / "logs").exists()
        return
    fails_before_any_job(wd, "--config", "target=inputs/clip.mp4", "source=inputs/face.png", *args,
                         expect=expect)


@pytest.mark.workflow
def test_two_targets_with_one_file_name_stop_the_run(wd):
    (wd / "inputs" / "b").mkdir()
    shutil.copy(wd / "inputs" / "clip.mp4", wd / "inputs" / "b" / "clip.mp4")
    (wd / "config" / "jobs.tsv").write_text("target\tsource\ninputs/clip.mp4\tinputs/face.png\n"
                                             "inputs/b/clip.mp4\tinputs/face.png\n")
    fails_before_any_job(wd, expect="would both write results/clip.*")


@pytest.mark.workflow
def test_keep_intermediates_true_as_the_readme_writes_it(wd):
    snakemake(wd, "--config", "target=inputs/clip.mp4", "source=inputs/face.png", "keep_intermediates=true")
    assert list((wd / "work" / "clip" / "encoded").glob("seg_*.mp4"))


@pytest.mark.workflow
def test_jfif_still_hash_in_cell_and_long_file_name_work(wd):
    img = cv2.imread(str(wd / "inputs" / "face.png"))
    cv2.imwrite(str(wd / "inputs" / "photo #1.jpg"), img)
    (wd / "inputs" / "photo #1.jpg").rename(wd / "inputs" / "photo #1.jfif")
    # 245 characters with its suffix, as exports from phones and cloud drives can be.
    long_name = " ".join(f"clip{i:02d}" for i in range(50))[:241]
    shutil.copy(wd / "inputs" / "clip.mp4", wd / "inputs" / f"{long_name}.mp4")
    write_sheet(wd / "config" / "jobs.tsv", [
        {"name": "still #1", "target": "inputs/photo #1.jfif", "source": "inputs/face.png"},
        {"name": "", "target": f"inputs/{long_name}.mp4", "source": "inputs/face.png"},
    ])
    snakemake(wd)
    assert (wd / "results" / "still #1.png").is_file()
    assert (wd / "results" / f"{long_name}.mp4").is_file()


@pytest.mark.parametrize("name", ["config", "jobs"])
def test_a_schema_is_read_once_a_process_as_pyyamls_safe_loader_reads_it(name):
    """Every snakemake command checks the config twice and each jobs sheet row once against a
    schema: it is read once (the same dict), with the C loader, as the pure-Python one reads it."""
    import yaml

    from facepipe.workflow.schema import read_schema

    path = Path(__file__).resolve().parent.parent / "config" / "schemas" / f"{name}.schema.yaml"
    assert read_schema(path) is read_schema(str(path))
    assert read_schema(path) == yaml.safe_load(path.read_text())
