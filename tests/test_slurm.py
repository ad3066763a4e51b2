"""profiles/slurm against a real SLURM: a single-node cluster on localhost with one fake GPU.

tests/slurm/start_slurm.sh installs slurmctld, slurmd, slurm-client and munge from Debian and starts
them (root, no systemd, no cgroups); the GPU is a `gpu` generic resource whose device file is a
symlink to /dev/null. The demo job (backend=standin, 2 s segments: two segments) then runs through
`snakemake --workflow-profile profiles/slurm`, first with a corrupt source image, so a cluster job
fails, then again with the right one, so the run resumes; the result must be frame-for-frame the
local run's. Where SLURM cannot be started (not root, no apt-get) the tests are skipped with the
reason; with FACEPIPE_REQUIRE_SLURM=1 (set by .ci/run) they fail instead.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import yaml
from tests.workflow_helpers import REPO, copy_workflow

pytestmark = pytest.mark.workflow

START_SLURM = REPO / "tests" / "slurm" / "start_slurm.sh"
REQUIRED = os.environ.get("FACEPIPE_REQUIRE_SLURM") == "1"
PARTITION = "debug"
CONFIG = ["--config", "backend=standin", "segment_seconds=2"]  # the 4 s demo clip: 2 segments
SEGMENT_RULES = {"detect_faces", "swap_faces", "render_segment"}  # no enhancer
GPU_RULES = {"detect_faces", "swap_faces"}
CPU_RULES = {"prepare_target", "embed_face", "mux_video"}
FINISHED_BEFORE_FAILURE = ("prepare_target",)  # + the stand-in models
SNAKEMAKE_LIMIT = 420  # seconds; each run takes one to two minutes


def unavailable(reason: str):
    if REQUIRED:
        pytest.fail(f"FACEPIPE_REQUIRE_SLURM=1 but the SLURM test cannot run: {reason}")
    pytest.skip(f"SLURM test skipped: {reason}")


def ctld_running() -> bool:
    pid = Path("/run/slurm/slurmctld.pid")
    try:
        os.kill(int(pid.read_text()), 0)
        return True
    except (OSError, ValueError):
        return False


def run_snakemake(workdir: Path, *args: str, limit: int = SNAKEMAKE_LIMIT) -> tuple[subprocess.CompletedProcess, float]:
    """snakemake under `timeout -k`, so a hang ends the test instead of CI; returns (proc, seconds)."""
    env = dict(os.environ)
    env.pop("CUDA_VISIBLE_DEVICES", None)  # sbatch --export=ALL: only SLURM may set it in jobs
    cmd = ["timeout", "-k", "15", str(limit), sys.executable, "-m", "snakemake", *args]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=limit + 60)
    elapsed = time.monotonic() - t0
    (workdir / f"snakemake-{int(t0)}.out").write_text(proc.stdout + proc.stderr)
    return proc, elapsed


def describe(proc: subprocess.CompletedProcess) -> str:
    return f"rc={proc.returncode}\n{(proc.stdout + proc.stderr)[-6000:]}"


@pytest.fixture(scope="module")
def slurm():
    """A running single-node SLURM with one fake GPU; stopped afterwards if this fixture started it."""
    if os.geteuid() != 0:
        unavailable("needs root (installs Debian packages, starts munged/slurmctld/slurmd)")
    if not shutil.which("apt-get") and not shutil.which("slurmctld"):
        unavailable("no apt-get to install SLURM from Debian, and no SLURM installed")
    # One machine, one cluster: two test runs at once (two checkouts) would start and stop the same
    # daemons under each other, so they take turns.
    lock = open("/tmp/facepipe-slurm-test.lock", "w")
    deadline = time.monotonic() + 1200
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                unavailable("another SLURM test run on this machine held the lock for 20 minutes")
            time.sleep(2)
    was_running = ctld_running()
    env = {**os.environ, "SLURM_FAKE_GPUS": "1", "SLURM_PARTITION_NAME": PARTITION}
    try:
        try:
            proc = subprocess.run(["timeout", "-k", "10", "900", "bash", str(START_SLURM)], env=env,
                                  capture_output=True, text=True, timeout=960)
        except subprocess.TimeoutExpired:
            unavailable("start_slurm.sh did not finish in 900 s")
        if proc.returncode != 0:
            unavailable(f"start_slurm.sh failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
        cpus, mem = subprocess.run(["sinfo", "-h", "-p", PARTITION, "-o", "%c %m"], capture_output=True,
                                   text=True, check=True).stdout.split()[:2]
        yield {"cpus": int(cpus.rstrip("+")), "mem_mb": int(mem.rstrip("+"))}
    finally:
        if not was_running:
            subprocess.run(["timeout", "-k", "5", "120", "bash", str(START_SLURM), "stop"], check=False)
        lock.close()


def fit_profile(workdir: Path, cpus: int, mem_mb: int) -> dict:
    """The shipped profile with only the site keys set for this one-node cluster (README: docs/cluster.md)."""
    path = workdir / "profiles" / "slurm" / "config.yaml"
    profile = yaml.safe_load(path.read_text())
    profile["default-resources"].update(slurm_partition=PARTITION, slurm_account="none")
    for res in [profile["default-resources"], *profile["set-resources"].values()]:
        for key in res:
            if key in ("cpus_per_task", "cpus_per_gpu"):
                res[key] = min(res[key], cpus)
            elif key == "mem_mb":
                res[key] = min(res[key], mem_mb)
    profile["slurm-init-seconds-before-status-checks"] = 2  # jobs here take seconds
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return profile


def decoded_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def cuda_line(log: Path) -> str:
    match = re.search(r"CUDA_VISIBLE_DEVICES=(\S+)", log.read_text())
    assert match, f"no CUDA_VISIBLE_DEVICES line in {log}"
    return match.group(1)


def submissions(proc: subprocess.CompletedProcess) -> dict[str, str]:
    """SLURM job id -> the job's log folder: rule_<rule> or group_<group>_<its rules>."""
    found = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: .*?/slurm_logs/([^/]+)/",
                       proc.stdout + proc.stderr)
    return dict(found)


def granted(jobids) -> dict[str, str]:
    """What SLURM recorded for each job (scontrol keeps finished jobs for MinJobAge, 300 s)."""
    return {j: subprocess.run(["scontrol", "-o", "show", "job", j], capture_output=True, text=True,
                              timeout=60).stdout for j in jobids}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    wd = copy_workflow(tmp_path_factory.mktemp("local"))
    proc, _ = run_snakemake(wd, "--cores", "2", *CONFIG)
    assert proc.returncode == 0, describe(proc)
    return wd


@pytest.fixture(scope="module")
def cluster(slurm, local_run, tmp_path_factory):
    """The demo job on SLURM: a run that fails in a cluster job, then a rerun that resumes."""
    wd = copy_workflow(tmp_path_factory.mktemp("cluster"))
    fit_profile(wd, slurm["cpus"], slurm["mem_mb"])
    demo = wd / "resources" / "demo"
    demo.mkdir(parents=True)
    shutil.copy(local_run / "resources/demo/target.mp4", demo / "target.mp4")
    (demo / "source.png").write_bytes(b"not a PNG: embed_face fails on the cluster")
    profile = ["--workflow-profile", "profiles/slurm", *CONFIG]

    failed, failed_s = run_snakemake(wd, *profile)
    finished = {rule: (wd / f"logs/demo/{rule}.log").stat().st_mtime_ns
                for rule in FINISHED_BEFORE_FAILURE if (wd / f"logs/demo/{rule}.log").exists()}
    finished.update({p.name: p.stat().st_mtime_ns for p in (wd / "logs/models").glob("*.log")})
    planned = subprocess.run([sys.executable, "-m", "snakemake", "--dry-run", *profile], cwd=wd,
                             capture_output=True, text=True, timeout=300)

    shutil.copy(local_run / "resources/demo/source.png", demo / "source.png")
    resumed, resumed_s = run_snakemake(wd, *profile)
    jobs = submissions(resumed)
    print(f"\nSLURM: failing run {failed_s:.0f} s, resumed run {resumed_s:.0f} s, {len(jobs)} jobs resumed")
    return {"wd": wd, "failed": failed, "failed_s": failed_s, "finished": finished, "planned": planned,
            "resumed": resumed, "resumed_s": resumed_s, "jobs": jobs, "granted": granted(jobs)}


def test_failed_cluster_job_is_reported_not_waited_on(cluster):
    failed = cluster["failed"]
    out = failed.stdout + failed.stderr
    assert failed.returncode not in (0, 124, 137), describe(failed)
    assert cluster["failed_s"] < 300, f"took {cluster['failed_s']:.0f} s to report the failure"
    assert re.search(r"SLURM-job '\d+' failed, SLURM status is: 'FAILED'", out), describe(failed)
    assert "embed_face" in out


def test_rerun_resumes_from_what_finished(cluster):
    resumed, wd = cluster["resumed"], cluster["wd"]
    assert resumed.returncode == 0, describe(resumed)
    planned = cluster["planned"].stdout
    for rule in ("prepare_target", "make_standin_model", "make_demo_inputs"):
        assert f"rule {rule}:" not in planned and f"checkpoint {rule}:" not in planned, planned[-4000:]
    assert "rule embed_face:" in planned
    assert set(FINISHED_BEFORE_FAILURE) <= set(cluster["finished"])
    for name, mtime in cluster["finished"].items():
        log = wd / f"logs/demo/{name}.log" if name in FINISHED_BEFORE_FAILURE else wd / f"logs/models/{name}"
        assert log.stat().st_mtime_ns == mtime, f"{name} ran again after the failure"


def test_one_cluster_job_per_segment(cluster):
    jobs = sorted(cluster["jobs"].values())
    groups = [j for j in jobs if j.startswith("group_segment_")]
    rules = [j.removeprefix("rule_") for j in jobs if j.startswith("rule_")]
    assert len(groups) == 2, jobs  # one per segment, each running swap and render
    assert all(g == "group_segment_render_segment_swap_faces" for g in groups), jobs
    # Detection (a job per segment) and tracking (on the main host) finished in the failing run,
    # which stopped at embed_face: the rerun resumes after them.
    assert rules == ["embed_face", "mux_video"], jobs


def test_gpu_requested_through_plugin_resources_only_by_gpu_jobs(cluster):
    for jobid, folder in cluster["jobs"].items():
        info = cluster["granted"][jobid]
        assert f"JobId={jobid} " in info, info
        if folder.startswith("group_segment_") or folder == "rule_detect_faces":
            # --gpus=1 (the plugin's `gpu`) and --cpus-per-gpu (its `cpus_per_gpu`), never --gres
            assert "TresPerJob=gres:gpu:1" in info and "CpusPerTres=gres:gpu:" in info, info
            assert "TresPerNode" not in info, info
        else:
            assert "gpu" not in info.lower(), info


def test_gpu_rules_saw_the_gpu_cpu_rules_did_not(cluster):
    logs = cluster["wd"] / "logs" / "demo"
    for rule in GPU_RULES:
        for seg in ("seg_0000", "seg_0001"):
            value = cuda_line(logs / rule / f"{seg}.log")
            assert value != "<unset>" and re.fullmatch(r"[0-9,]+", value), (rule, seg, value)
    for rule in CPU_RULES:
        log = logs / ("embed_face_source.log" if rule == "embed_face" else f"{rule}.log")
        assert cuda_line(log) == "<unset>", rule


def test_result_is_frame_for_frame_the_local_run(cluster, local_run):
    assert cluster["resumed"].returncode == 0, describe(cluster["resumed"])
    here = decoded_frames(cluster["wd"] / "results/demo.mp4")
    there = decoded_frames(local_run / "results/demo.mp4")
    assert len(here) == len(there) == 100
    for i, (a, b) in enumerate(zip(here, there)):
        assert np.array_equal(a, b), f"frame {i} differs"


def test_dry_run_plans_one_group_job_per_segment(local_run):
    """Needs no cluster: the grouping comes from the profile (groups, group-components)."""
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--dry-run", "--workflow-profile", "profiles/slurm",
                           "--forcerun", "detect_faces", *CONFIG], cwd=local_run, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.count("Group job segment") == 2, proc.stdout[-4000:]
