"""Provenance: every result says what made it, and the plan trusts that record, not file times.

Snakemake's own metadata (.snakemake/) and the intermediates (work/) can be lost; a changed
source, setting or target must still remake the result, an unchanged job must remake nothing,
and a file the user put at a result's path is never adopted or overwritten.
"""

import json
import os
import re
import shutil
from pathlib import Path

import cv2
import pytest
from tests.workflow_helpers import REPO
from tests.workflow_helpers import planned_jobs, snakemake, standin_job

from facepipe.workflow import provenance
from facepipe.media.ffmpeg import read_result_record

# --- unit ----------------------------------------------------------------------------------------

JOB = {"name": "j", "target": "t.mp4", "source": "s.png", "reference": "", "backend": "standin", "crf": 18,
       "encoder": "libx264", "preset": "veryfast", "faces": "one", "max_height": 0, "fps": 0,
       "segment_seconds": 30, "providers": ["cpu"], "precision": "fp32", "batch_size": 8, "enhancer": "none",
       "reference_threshold": 0.35, "source_face": -1}
CONFIG = {"degrade": ["fp16"], "min_free_gpu_mb": 1024}


CODE = {stage: f"code-of-{stage}" for stage in provenance.STAGES}


def record(**changes):
    job = {**JOB, **changes}
    code = {s: CODE[s] for s in provenance.result_stages(job, is_image=False)}
    return provenance.job_record(job, CONFIG, code=code, digest=lambda p: f"sha-of-{p}",
                                 made_by_workflow=lambda p: False)


def stamps(rec, code=CODE):
    return {s: provenance.stage_stamp(rec, s, code[s]) for s in provenance.STAGES}


def test_each_stage_stamp_changes_only_with_what_the_stage_depends_on():
    base = stamps(record())
    for changed_job, expected in ((record(crf=30), ["render_segment"]), (record(source="other.png"), ["embed_face"])):
        assert [s for s in provenance.STAGES if stamps(changed_job)[s] != base[s]] == expected
    # A stage's code version is in its own stamp only.
    new_code = {**CODE, "swap_faces": "other code"}
    assert [s for s in provenance.STAGES if stamps(record(), new_code)[s] != base[s]] == ["swap_faces"]


def test_the_result_record_holds_the_code_of_the_stages_that_make_it_and_no_other():
    assert set(record()["code"]) == {"prepare_target", "detect_faces", "track_faces", "embed_face", "swap_faces",
                                     "render_segment", "mux_video"}
    assert "enhance_faces" in record(enhancer="gfpgan_1.4")["code"]
    still = provenance.result_stages(JOB, is_image=True)
    assert "finalize_image" in still and not {"render_segment", "mux_video"} & set(still)


def test_every_rule_option_is_in_its_stage_stamp():
    """An option a rule takes through params: (opt("key") or config["key"]) must reach its stamp,
    or losing .snakemake/ would hide a change of it."""
    for smk in (REPO / "rules").glob("*.smk"):
        for block in re.split(r"\n(?=(?:rule|checkpoint) )", smk.read_text()):
            head = re.match(r"(?:rule|checkpoint) (\w+):", block)
            if not head or head.group(1) not in provenance.STAGES:
                continue
            params = block.split("params:", 1)[1] if "params:" in block else ""
            keys = set(re.findall(r'opt\("(\w+)"\)|config\["(\w+)"\]|JOBS\[wildcards\.name\]\["(\w+)"\]', params))
            keys = {k for group in keys for k in group if k} - {"keep_intermediates"}
            missing = keys - set(provenance.STAGES[head.group(1)])
            assert not missing, f"rule {head.group(1)}: params {sorted(missing)} are not in its stamp"


def test_stamps_are_rewritten_only_on_change_and_dated_in_the_past_for_a_current_result(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = record()
    assert set(provenance.settle_stamps("j", base, "absent", CODE)) == set(provenance.STAGES)
    assert provenance.settle_stamps("j", base, "absent", CODE) == []
    # Trying a setting with --dry-run leaves the stamps as they are.
    assert provenance.settle_stamps("j", record(crf=30), "stale", CODE, dry_run=True) == []
    assert provenance.settle_stamps("j", record(crf=30), "stale", CODE) == ["render_segment", "mux_video",
                                                                             "finalize_image"]
    # New code for QC: its stamp only (the result's record does not hold QC's code).
    assert provenance.settle_stamps("j", record(crf=30), "current", {**CODE, "qc_report": "new"}) == ["qc_report"]
    shutil.rmtree(tmp_path / "work")
    assert provenance.settle_stamps("j", base, "current", CODE) == []
    assert os.path.getmtime(provenance.stamp_path("j", "detect_faces")) == provenance.PAST


def test_result_state(tmp_path):
    base = record()
    result = tmp_path / "r.mp4"
    assert provenance.result_state(result, base, lambda p: None) == "absent"
    result.write_bytes(b"the user's own file")
    assert provenance.result_state(result, base, lambda p: None) == "foreign"
    assert provenance.result_state(result, base, lambda p: provenance.record_text(base)) == "current"
    assert provenance.result_state(result, base, lambda p: provenance.record_text(record(crf=1))) == "stale"


def test_digest_cache_follows_content(tmp_path):
    f = tmp_path / "f.bin"
    f.write_bytes(b"one")
    cache = provenance.DigestCache(tmp_path / "cache.json")
    first = cache.digest(f)
    cache.save()
    assert provenance.DigestCache(tmp_path / "cache.json").digest(f) == first
    f.write_bytes(b"two")
    assert cache.digest(f) != first


# --- workflow ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_job(tmp_path_factory, media_dir):
    """One finished stand-in job, run once for the module; each test works on a copy of it."""
    wd = standin_job(tmp_path_factory.mktemp("provenance") / "wf",
                     {"clip.mp4": media_dir / "silent.mp4", "face.png": media_dir / "astronaut.png"},
                     {"name": "clip", "target": "inputs/clip.mp4", "source": "inputs/face.png"})
    snakemake(wd)
    return wd


@pytest.fixture()
def job_dir(tmp_path, finished_job):
    """A copy of the finished job, file times kept (as Snakemake and the stamps compare them)."""
    return Path(shutil.copytree(finished_job, tmp_path / "wf", symlinks=True))


# What a user may delete: the intermediates, Snakemake's own records, or both.
LOSSES = {"work": ["work"], "snakemake": [".snakemake"], "both": ["work", ".snakemake"]}


def forget(wd, loss="both"):
    for folder in LOSSES[loss]:
        shutil.rmtree(wd / folder)


def result_record(wd):
    return json.loads(read_result_record(wd / "results" / "clip.mp4"))


def make_change(wd, media_dir, change) -> list[str]:
    """Change the job's source, a setting, a stage's code or its target; the arguments that a run
    with the change needs."""
    if change == "source":
        face = wd / "inputs" / "face.png"
        cv2.imwrite(str(face), cv2.flip(cv2.imread(str(face)), 1))  # another photo at the same path
    elif change == "setting":
        return ["--config", "crf=30"]
    elif change == "code":
        with open(wd / "scripts" / "render_segment.py", "a") as fh:
            fh.write("# a change to the render stage's code\n")
    else:
        shutil.copy(media_dir / "clip.mp4", wd / "inputs" / "clip.mp4")  # same path, other content
    return []


@pytest.mark.workflow
def test_result_carries_its_record(finished_job):
    rec = result_record(finished_job)
    assert set(rec["inputs"]) == {"target", "source"}
    assert rec["settings"]["crf"] == 18 and rec["code"]


@pytest.mark.workflow
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_unchanged_job_remakes_nothing_after_work_or_snakemake_are_deleted(job_dir, loss):
    forget(job_dir, loss)
    assert planned_jobs(job_dir) == {}
    if loss != "snakemake":
        # A dry run with another setting plans the remake, and takes nothing of it back to the
        # real run. (With work/ kept but .snakemake/ lost, a dry run cannot see a changed setting
        # or stage code: it leaves the stamps as they are, and Snakemake has no record of the old
        # params or code. The real run rewrites the stamps and remakes:
        # test_a_change_remakes_...[setting-snakemake] and [code-snakemake].)
        assert planned_jobs(job_dir, "--config", "crf=30").get("mux_video") == 1
    assert planned_jobs(job_dir) == {}


@pytest.mark.workflow
@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("change", ["source", "setting", "code", "target"])
def test_a_change_remakes_the_result_after_work_or_snakemake_are_deleted(job_dir, media_dir, loss, change):
    """Every combination of lost intermediates, lost Snakemake records and a changed input,
    setting or code version remakes the result. (work/ alone lost once kept the old result: its
    plan, a checkpoint, was gone, and Snakemake judges nothing after a checkpoint it need not run.)"""
    before = result_record(job_dir)
    forget(job_dir, loss)
    args = make_change(job_dir, media_dir, change)
    if not (loss == "snakemake" and change in ("setting", "code")):  # a dry run cannot see these (above)
        assert planned_jobs(job_dir, *args).get("mux_video") == 1
    snakemake(job_dir, *args)
    after = result_record(job_dir)
    assert after != before
    assert planned_jobs(job_dir, *args) == {}


@pytest.mark.workflow
def test_changed_source_with_work_kept_and_snakemake_deleted_redoes_the_swap_not_detection(job_dir):
    shutil.rmtree(job_dir / ".snakemake")
    face = job_dir / "inputs" / "face.png"
    cv2.imwrite(str(face), cv2.flip(cv2.imread(str(face)), 1))
    proc = snakemake(job_dir)
    ran = set(re.findall(r"^(?:local)?rule (\w+):", proc.stdout + proc.stderr, re.M))
    assert {"embed_face", "swap_faces", "render_segment", "mux_video"} <= ran
    assert not ran & {"prepare_target", "detect_faces"}


@pytest.mark.workflow
def test_a_foreign_file_at_the_result_path_stops_the_run_untouched(job_dir):
    result = job_dir / "results" / "clip.mp4"
    result.write_bytes(b"my own video, not made by facepipe")
    mtime = result.stat().st_mtime_ns
    proc = snakemake(job_dir, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "results/clip.mp4" in out and "not made by this workflow" in out
    assert "localrule" not in out and "Finished jobid" not in out  # stopped before any job
    assert result.read_bytes() == b"my own video, not made by facepipe"
    assert result.stat().st_mtime_ns == mtime


@pytest.mark.workflow
def test_a_result_of_an_older_version_without_a_record_is_not_adopted_either(job_dir):
    """Results made before records existed carry the AI label but no record: named as such, kept."""
    from facepipe.media import ffmpeg, files

    result = job_dir / "results" / "clip.mp4"
    older = job_dir / "older.mp4"
    ffmpeg.run_ffmpeg(["-i", str(result), "-map", "0", "-c", "copy", "-map_metadata", "-1",
                      "-metadata", f"comment={files.AI_LABEL}", str(older)], what="an older result")
    os.replace(older, result)
    before = result.read_bytes()
    proc = snakemake(job_dir, check=False)
    assert proc.returncode != 0
    assert "was made by an older facepipe that wrote no record" in proc.stdout + proc.stderr
    assert result.read_bytes() == before


@pytest.mark.workflow
def test_detection_waits_for_the_source_check_when_models_are_still_to_be_fetched(job_dir):
    """Before the learned models are fetched the run cannot check the source photo while it plans:
    the target's detection then waits for embed_face, which stops the run on a photo without a
    face. (Stand-ins are checked while the run plans: no such wait.)"""
    def edges(*args):
        dot = snakemake(job_dir, "--dag", *args).stdout
        label = dict(re.findall(r'^\s*(\d+)\[label = "(\w+)', dot, re.M))
        return {(label[a], label[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, re.M)}

    assert ("embed_face", "detect_faces") in edges("--config", "backend=insightface")
    assert ("embed_face", "detect_faces") not in edges("--config", "backend=standin", "crf=30", "track_gap=4")


@pytest.mark.workflow
def test_a_mask_option_reruns_the_swap_onward_and_nothing_before(job_dir):
    for change in ("face_mask=[box,mouth]", "mask_blur=0.5", "mask_padding=[0,0,10,0]", "mask_regions=[skin,nose]"):
        jobs = planned_jobs(job_dir, "--config", change)
        assert {"swap_faces", "render_segment", "mux_video"} <= set(jobs), change
        assert not set(jobs) & {"prepare_target", "detect_faces", "track_faces", "embed_face", "cast_sheet"}, (
            change, jobs)
