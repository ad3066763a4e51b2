# Helper functions shared by the rules: the job table, per-job options, model paths,
# the segment list read from the prepare_target checkpoint, and the final outputs; and the run's
# plan (plan_run, plan_job): the one place where a run checks, probes and writes before its jobs.
import os
import re
from pathlib import Path
from types import SimpleNamespace

from snakemake.utils import validate

from facepipe.models.backends import (
    backend_summary,
    face_crop_kind,
    fetchable_learned_models,
    resolve_jobs,
)
from facepipe.workflow.jobs import (
    JobError,
    build_jobs,
    face_images,
    read_sheet,
    swap_roles,
)
from facepipe.models import (
    BACKENDS,
    MODELS,
    batched_path,
    model_files,
    model_path,
    models_for,
)
from facepipe.workflow.preflight import (
    PreflightError,
    check_face_photos,
    check_input_files,
    check_jobs,
    models_for_check,
    package_warnings_to,
    stop_run,
    target_kind,
)
from facepipe.workflow import provenance
from facepipe.workflow.schema import schema_problem
from facepipe.workflow.runmode import DRY_RUN, JOB, READING, RUN, run_mode, timers_of
from facepipe.faces import roles


wildcard_constraints:
    # seg_0000, seg_0001, ...; and "preview", a few chosen frames (rules/preview.smk)
    segment=r"seg_\d{4}|preview",
    model=r"[^/]+",
    role=roles.PATTERN,
    stem=r"[^/]+",
    model_stem=r"(standin/)?[^/]+",


def load_jobs():
    if config.get("target"):
        return build_jobs(config, None)
    sheet = read_sheet(config["jobs"])
    # One line naming the row, the column, the value and what is allowed (Snakemake's validate
    # prints jsonschema's dump); validate then still runs, as the schema's reference.
    schema = Path(workflow.basedir) / "config/schemas/jobs.schema.yaml"
    for number, row in enumerate(sheet.to_dict("records"), start=1):
        given = {k: v for k, v in row.items() if not (isinstance(v, float) and v != v)}
        problem = schema_problem(
            given, schema, f"jobs sheet {config['jobs']!r} row {number}, column"
        )
        if problem:
            raise JobError(problem)
    validate(sheet, "../config/schemas/jobs.schema.yaml", set_default=False)
    return build_jobs(config, sheet)


# Reading this file does no work beyond the configuration and the jobs sheet: every snakemake
# invocation reads it (a dry run, --lint, --report, each job's own process). Checks and writes
# wait for the plan (plan_run below).
try:
    JOBS = load_jobs()
except JobError as exc:
    stop_run(str(exc))


# A job name is exactly one of the jobs' names: results/NAME.cast.png is job NAME's cast sheet,
# never the still result of a job called "NAME.cast".
wildcard_constraints:
    name="|".join(re.escape(name) for name in sorted(JOBS, key=len, reverse=True))
    or r"[^/]+",


# backend=auto becomes a concrete backend here (in new job dicts: the sheet's are left as read),
# so rules see (and their params record) the backend that runs. It only looks for model files,
# so a job's own process resolves it as its main process did. The lines are printed once, when
# the run plans its jobs (plan_run).
try:
    JOBS, BACKEND_WARNINGS, BACKEND_INFO = resolve_jobs(JOBS)
except ValueError as exc:
    stop_run(str(exc))


# --- The run's plan: the one place that checks, probes and writes -----------------------------
#
# Snakemake tells a run from a dry run, --report or --lint only once it builds the job graph
# (facepipe.workflow.runmode), and builds the graph from the stamps, so the plan is made by the first input
# function that needs it (final_outputs, a stage's stamp, gpu_count); Snakemake's onstart comes
# after the graph, too late. What each invocation does:
#
#   run, main process   once (plan_run): stale locks cleared; every check that can fail before
#                       the heavy work (preflight: names, locations, writable folders, ffmpeg's
#                       encoder, each job's files); the GPU probed (NVML); the backend lines.
#                       Per job in the graph (plan_job): the result's record compared with the job,
#                       its photos checked, its stamps and remake token written; caches saved.
#   dry run             the same, less what writes or starts a process (the folders' write test,
#                       ffmpeg, NVML, stamps, caches): a stamp a run would write is written to
#                       Snakemake's temporary folder instead, so the plan shows what a run remakes.
#   --report, --dag...  nothing: the stamps are read as they are (rule stamp stands in for any
#                       that is missing).
#   a job's process,    nothing (a job's process reads the code-version and digest caches the main
#   --lint              process saved; a cluster job probes NVML only if its gpu resource asks).


def plan_run():
    """The run's checks, once per process (see above); returns facepipe.workflow.runmode's mode."""
    if _PLAN:
        return _PLAN[0]
    mode = run_mode(workflow)
    if mode == READING:
        return mode  # no graph yet: nothing to plan
    _PLAN.append(mode)
    if mode not in (RUN, DRY_RUN):
        return mode
    if mode == RUN:
        from facepipe.workflow.locks import clear_stale_locks

        clear_stale_locks(".snakemake", logger=logger)
    try:
        # Everything that can fail before the heavy work fails here, before any job runs. The
        # demo's files are made by rules, which are all known now.
        check_jobs(JOBS, try_outputs=mode == RUN)
        for name, job in JOBS.items():
            check_input_files(name, job, made_by_workflow)
    except PreflightError as exc:
        stop_run(str(exc), at_once=True, workflow=workflow)
    if mode == RUN:
        from facepipe.gpu import nvml_memory_mb

        _GPU.append(nvml_memory_mb() is not None)
        provenance.rule_code_versions(*_CODE_VERSION_FILES, save=True)
    for line in BACKEND_WARNINGS:
        logger.warning(line)
    for line in BACKEND_INFO:
        logger.info(line)
    return mode


_PLAN = []
_GPU = []


def check_job_photos(name):
    """The faces of job `name`'s photos, found with its own detector while the run plans, before
    any job starts: a source without a face stops the run here, not after the target's
    detection. The record is the embedding cache's entry, so embed_face reads it. On a run whose
    model rules have not run yet, the models are made for the check in the run's temporary folder
    (preflight.models_for_check); a model that needs a download leaves the check to embed_face.
    """
    photos = face_images(JOBS[name]).values()
    if not any(Path(p).is_file() and not made_by_workflow(p) for p in photos):
        return  # photos made by the workflow (the demo's) are checked by their embed_face jobs
    keys = [
        job_models(SimpleNamespace(name=name))[r] for r in ("detector", "recognizer")
    ]
    backend = JOBS[name]["backend"]
    cache_dir = Path("resources/embeddings") / code_version("embed_face")
    files = [model_path(key, backend) for key in keys]
    # Every file they run from, as their rules make them (a converted model's source copy, the
    # detector's mesh): one missing (a checkout from before a rule made it) is made for the check.
    if not all(file.is_file() for key in keys for file in model_files(key, backend)):
        made = Path(workflow.snakemake_tmp_dir) / "facepipe-check-models"
        files = models_for_check(backend, keys, made)
        if files is None:
            return
        # Models made here may differ in their bytes from the rules' own: their cache entries
        # would never be read.
        cache_dir = made / "embeddings"
    try:
        # What the package warns of while checking (a damaged cache entry it recomputes) reaches
        # the console, as it would from the embed_face job the check stands in for.
        with package_warnings_to(logger):
            lines = check_face_photos(
                name,
                JOBS[name],
                *files,
                cache_dir=cache_dir,
                made_by_workflow=made_by_workflow,
                # A dry run writes nothing of the workflow's: the photo is checked, not cached.
                save_cache=not workflow.dryrun,
            )
    except PreflightError as exc:
        stop_run(str(exc), at_once=True, workflow=workflow)
    for line in lines:
        logger.warning(line)


def have_gpu():
    """Whether this machine has a GPU for the jobs: NVML's answer, probed once by a run's main
    process (plan_run). A job's own process (a cluster job) probes nothing: it takes the GPUs its
    scheduler gave it (CUDA_VISIBLE_DEVICES, SLURM_GPUS_ON_NODE, SLURM_JOB_GPUS). A dry run,
    --report and --lint count none."""
    if plan_run() == JOB:
        given = (os.environ.get(v, "").strip() for v in GPU_ENVIRONMENT)
        return any(value not in ("", "0", "-1", "NoDevFiles") for value in given)
    return bool(_GPU and _GPU[0])


GPU_ENVIRONMENT = ("CUDA_VISIBLE_DEVICES", "SLURM_GPUS_ON_NODE", "SLURM_JOB_GPUS")


def gpu_count(wildcards):
    """1 when the job's providers can use a GPU on this machine, else 0.

    Without a GPU the GPU stages are not held to the one-GPU limit, so segments run in
    parallel under --cores. A cluster profile sets gpu itself (profiles/slurm).
    """
    wants = set(JOBS[wildcards.name]["providers"]) & {"cuda", "tensorrt"}
    return int(
        bool(wants) and BACKENDS[JOBS[wildcards.name]["backend"]].gpu and have_gpu()
    )


def identity_every(wildcards):
    """Params function of detect_faces: facepipe.faces.detection.IDENTITY_EVERY. Imported when a detection
    job is made, not while the workflow is read: facepipe.faces.detection loads pyarrow and ONNX Runtime
    (about 0.5 s), which every snakemake command and job process would pay."""
    from facepipe.faces.detection import IDENTITY_EVERY

    return IDENTITY_EVERY


def opt(key):
    """Input/params function returning one option of the wildcard's job."""
    return lambda wildcards: JOBS[wildcards.name][key]


def is_image_job(name):
    """A still target (by its content: a .jfif is a still, an MP4 named .png is a video)."""
    return target_kind(JOBS[name]["target"]) == "image"


def result_path(name):
    return f"results/{name}.png" if is_image_job(name) else f"results/{name}.mp4"


def final_outputs(wildcards):
    """The results and cast sheets (an input function of the default target, the first the
    graph needs: the run's checks come first)."""
    plan_run()
    return [
        path
        for name in JOBS
        for path in (result_path(name), f"results/{name}.cast.png")
    ]


def made_by_workflow(path):
    """Whether the workflow makes this file (the demo inputs); Snakemake follows it by time."""
    return any(rule.is_producer(str(path)) for rule in workflow.rules)


# Read by every process; saved only by a run's main process (plan_run, plan_job).
_DIGESTS = provenance.DigestCache(".snakemake/facepipe/digests.json")
_RECORDS = {}
_CODE_VERSION_FILES = (
    Path(workflow.basedir) / "scripts",
    ".snakemake/facepipe/code_versions.json",
)
_CODE_VERSIONS = {}


def code_version(rule_name):
    """Params value and stamp part: the code a rule runs, its script scripts/RULE.py (every rule
    with a script is named after it) and the facepipe modules that imports, transitively. A code
    change reruns exactly the rules whose code changed, and what follows them. fetch_model takes
    none: what it fetches is fixed by the model's pinned SHA-256, whatever code fetched it.
    Computed once per process (or read from the cache a run's main process saved).
    """
    if not _CODE_VERSIONS:
        _CODE_VERSIONS.update(provenance.rule_code_versions(*_CODE_VERSION_FILES))
    return _CODE_VERSIONS[rule_name]


def job_record(name):
    """The record of what makes job `name`'s result (its inputs' content, settings, and the code
    of the stages that make it)."""
    if name not in _RECORDS:
        stages = provenance.result_stages(JOBS[name], is_image=is_image_job(name))
        _RECORDS[name] = provenance.job_record(
            JOBS[name],
            config,
            code={stage: code_version(stage) for stage in stages},
            digest=provenance.digest_or_missing(_DIGESTS.digest),
            made_by_workflow=made_by_workflow,
        )
    return _RECORDS[name]


def record_text(wildcards):
    """Params function: the record written into the result (its change also reruns the mux)."""
    return provenance.record_text(job_record(wildcards.name))


def stamp(rule_name):
    """Input function: a rule's stamp (facepipe.workflow.provenance), as plan_job settled it."""

    def _path(wildcards):
        return plan_job(wildcards.name)[rule_name]

    return _path


def remake_token(wildcards):
    """Input function of prepare_target: the job's remake token (facepipe.workflow.provenance), settled
    with the stamps."""
    return plan_job(wildcards.name)[provenance.REMAKE_TOKEN]


def plan_job(name):
    """Job `name`'s part of the run's plan (see plan_run): compare its existing result with the
    job, check its photos and write its stamps (a run's main process), or plan them (a dry run).
    Returns stage -> the stamp file its rule reads.

    A file at a result's path without a record was not made by this workflow: the run stops
    before any job and the file is left as it is.
    """
    if name in _JOB_PLANS:
        return _JOB_PLANS[name]
    mode = plan_run()
    paths = {
        stage: provenance.stamp_path(name, stage)
        for stage in (*provenance.STAGES, provenance.REMAKE_TOKEN)
    }
    if mode not in (RUN, DRY_RUN):
        return paths
    _JOB_PLANS[name] = paths
    record = job_record(name)
    state = provenance.result_state(result_path(name), record, read_result_record)
    if state == "foreign":
        from facepipe.media.ffmpeg import carries_ai_label

        made_by = (
            "was made by an older facepipe that wrote no record of its inputs"
            if carries_ai_label(result_path(name))
            else "was not made by this workflow (it carries no facepipe record)"
        )
        stop_run(
            f"{result_path(name)} exists but {made_by}, so it is neither used nor overwritten: "
            f"move it away, or give job {name!r} another name",
            at_once=True,
            workflow=workflow,
        )
    # Before any stamp is written: a photo without a face leaves nothing behind.
    if state != "current":
        check_job_photos(name)
    code = {stage: code_version(stage) for stage in provenance.STAGES}
    if mode == RUN:
        renewed = provenance.settle_stamps(name, record, state, code)
    else:
        planned = provenance.planned_stamps(name, record, state, code, dry_run=True)
        renewed = [s for s, (_, act) in planned.items() if act == provenance.WRITE_NOW]
        for stage in renewed:
            paths[stage] = dry_run_stamp(name, stage, planned[stage][0])
    # A current result needs none of its own stages again, whatever a stamp says; a stage beside
    # it (cast, preview, QC) may.
    beside = set(renewed) - set(
        provenance.result_stages(JOBS[name], is_image=is_image_job(name))
    )
    remake = state == "stale" or bool(beside)
    if mode == RUN:
        provenance.settle_remake_token(name, remake=remake)
        _DIGESTS.save()
    elif provenance.remake_token_wanted(name, remake=remake):
        paths[provenance.REMAKE_TOKEN] = dry_run_stamp(
            name, provenance.REMAKE_TOKEN, provenance.remake_token_text()
        )
    if state == "stale":
        logger.info(
            f"{result_path(name)} was made from other inputs, settings or code: it will be remade"
        )
    return paths


_JOB_PLANS = {}


def missing_stamps():
    """A pattern of the stamp files (under work/) not on disk as the workflow is read: the files
    rule stamp stands in for. Reads only; one that matches nothing when every stamp is there.
    """
    missing = [
        path.removeprefix("work/")
        for name in JOBS
        for stage in (*provenance.STAGES, provenance.REMAKE_TOKEN)
        if not Path(path := provenance.stamp_path(name, stage)).exists()
    ]
    return "|".join(re.escape(path) for path in missing) or "(?!)"


def dry_run_stamp(name, stage, content):
    """A stamp a run would write now, written for a dry run in Snakemake's temporary folder
    (outside the working directory, removed when Snakemake ends): newer than the stage's outputs,
    it makes the dry run plan what the run would remake."""
    path = (
        Path(workflow.snakemake_tmp_dir) / "facepipe-dry-run" / name / f"{stage}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return str(path)


def read_result_record(path):
    from facepipe.media.ffmpeg import read_result_record as read

    return read(path)


def job_models(wildcards):
    j = JOBS[wildcards.name]
    return models_for(
        j["backend"], j["enhancer"], j["precision"], j["swapper"], j["face_mask"]
    )


def model_file(role):
    """Input function: the model file a job uses for one role (detector, swapper, ...).

    No file for a role without one (no enhancer; a swapper that is code, not a file). A model
    inside an installed package is a source file to Snakemake, never fetched.
    """

    def _path(wildcards):
        j = JOBS[wildcards.name]
        key = job_models(wildcards).get(role)
        if key is None or not MODELS[key].filename:
            return []
        return str(model_path(key, j["backend"]))

    return _path


def batched_model_file(role):
    """model_file, or its batched copy (rule make_batched_model) for a job with batch_size > 1."""
    plain = model_file(role)

    def _path(wildcards):
        path = plain(wildcards)
        if path and JOBS[wildcards.name]["batch_size"] > 1:
            return str(batched_path(path))
        return path

    return _path


def embedding_image(wildcards):
    images = face_images(JOBS[wildcards.name])
    if wildcards.role not in images:
        raise WorkflowError(
            f"job {wildcards.name!r} has no {wildcards.role} image (its map changed?)"
        )
    return images[wildcards.role]


def swap_embeddings(wildcards):
    """The embeddings the swap reads, by role (facepipe.workflow.jobs.swap_roles)."""
    return {
        role: f"work/{wildcards.name}/{role}_embedding.npz"
        for role in swap_roles(JOBS[wildcards.name])
    }


def photos_first(wildcards):
    """Input function of detect_faces: the job's embeddings, for a backend whose models are fetched
    on first use. Before they are there the source photos cannot be checked while the run plans
    (check_job_photos), so the target's detection waits for embed_face, which stops the run on a
    photo without a face. Always for such a backend, so the rule's inputs are the same from run to
    run; ancient, so a new embedding (another source) never reruns detection."""
    j = JOBS[wildcards.name]
    keys = [job_models(wildcards)[role] for role in ("detector", "recognizer")]
    if BACKENDS[j["backend"]].standin or not any(MODELS[k].fetchable for k in keys):
        return []
    return [ancient(path) for path in swap_embeddings(wildcards).values()]


def segment_plan(wildcards):
    """The plan a segment's stage reads: the job's segments folder, or the preview's own plan."""
    if wildcards.segment == "preview":
        return f"work/{wildcards.name}/preview/manifest.json"
    return f"work/{wildcards.name}/segments"


def tracks_table(wildcards):
    """The tracks a segment's swap reads: the job's, or those cut for the preview's frames."""
    if wildcards.segment == "preview":
        return f"work/{wildcards.name}/preview/tracks.parquet"
    return f"work/{wildcards.name}/tracks.parquet"


def segment_files(pattern):
    """Input function: one file per segment of the job (the prepare_target checkpoint's plan)."""

    def _files(wildcards):
        return [
            pattern.format(name=wildcards.name, segment=seg)
            for seg in manifest(wildcards)["segments"]
        ]

    return _files


def manifest(wildcards):
    """The prepare_target checkpoint's manifest: the segments and their frame counts."""
    from facepipe.media.integrity import DamagedIntermediateError, read_sealed_json

    seg_dir = checkpoints.prepare_target.get(name=wildcards.name).output.segments
    try:
        # A damaged plan takes its folder with it, so the next run plans again.
        return read_sealed_json(Path(seg_dir) / "manifest.json", owner=seg_dir)
    except DamagedIntermediateError as exc:
        raise WorkflowError(str(exc))


# A job with fewer segments than cores would leave cores idle in detection and the swap: each of its
# segment jobs for them takes a share (the offline backend's worker processes, which give the same
# faces tables and patches as one; the decoder's threads); at most this many, so a cluster job does
# not ask for a node. The render's threads are its encoder's (render_threads), which do not follow
# --cores.
MAX_SEGMENT_THREADS = 8


def plan_cores(wildcards):
    """Threads of prepare_target: the cores that will run the job's segments side by side, which
    its plan splits the video for (facepipe.media.video.segment_count: a multiple of them, each
    segment at least MIN_SEGMENT_SECONDS). 1, the plan as segment_seconds alone makes it, on a
    cluster (no --cores: segments run on nodes of their own) and for a job whose detection and
    swap use the GPU, where segments take turns and each one's start loads the models again.
    Threads, not params: a plan stays as it was made when a later run has other cores (a
    change of params would make the plan, and everything after it, again)."""
    import os

    try:
        cores = workflow._cores
        on_nodes = workflow.non_local_exec or workflow.remote_exec
    except Exception:
        cores, on_nodes = None, True
    if on_nodes or not isinstance(cores, int) or cores < 2 or gpu_count(wildcards):
        return 1
    return min(cores, os.cpu_count() or 1, MAX_SEGMENT_THREADS)


def segment_threads(wildcards):
    """Threads of a segment's detection or swap job: the cores the job's segments leave idle shared
    among them, at least 1 (--set-threads still overrides)."""
    import os

    try:
        cores = workflow._cores
    except Exception:
        cores = None
    if not isinstance(cores, int) or cores < 2:
        return 1
    cores = min(cores, os.cpu_count() or 1, MAX_SEGMENT_THREADS)
    try:
        segments = len(manifest(wildcards)["segments"])
    except Exception:  # no plan yet: the job is made again once there is one
        return 1
    return max(1, cores // max(1, segments))


def swap_threads(wildcards):
    """Threads of a segment's swap job: segment_threads for a swapper that works on the frame's
    pixels (the offline swaps: a face at a time on the CPU, in worker processes); 1 for a learned
    one (its batches run on the model's device, and a job of 2 threads would wait for the cores
    that a 1-thread job beside it holds)."""
    from facepipe.models.registry import works_on_pixels

    return (
        segment_threads(wildcards)
        if works_on_pixels(JOBS[wildcards.name]["swapper"])
        else 1
    )


def render_threads(wildcards):
    """Threads of a segment's render: its encoder's (encoder_threads; facepipe.media.video), fixed
    for the run whatever --cores says, because x264's frames depend on the count (all the
    machine's for a video of one segment, half for more). Also the render's params, so that
    another count encodes the segments again."""
    from facepipe.media.video import encoder_threads

    try:
        segments = len(manifest(wildcards)["segments"])
    except Exception:  # no plan yet: the job is made again once there is one
        segments = 2
    return encoder_threads(JOBS[wildcards.name]["encoder_threads"], segments=segments)


def final_patches_file(name, segment):
    """Face patches that go into the output: the enhancer's when it runs, else the swap's."""
    stage = "swapped" if JOBS[name]["enhancer"] == "none" else "enhanced"
    return f"work/{name}/{stage}/{segment}.parquet"


def final_patches(wildcards):
    return final_patches_file(wildcards.name, wildcards.segment)


def intermediate(path):
    """An output only the next stage needs: removed once used, unless keep_intermediates."""
    return path if config["keep_intermediates"] else temp(path)


def encoded_segments(wildcards):
    return [
        f"work/{wildcards.name}/encoded/{seg}.mp4"
        for seg in manifest(wildcards)["segments"]
    ]


def model_key_for_file(filename):
    for key, spec in MODELS.items():
        if spec.filename == filename:
            return key
    raise WorkflowError(
        f"unknown model file {filename!r}; known: {sorted(s.filename for s in MODELS.values())}"
    )


def print_run_summary():
    """Degraded GPU jobs, listed at the end of every run (also written in each job's log)."""
    from facepipe.gpu import summarize

    lines = summarize("work", logger=logger)
    if lines:
        logger.warning("GPU jobs that ran degraded:\n  " + "\n  ".join(lines))


def print_backend_summary():
    """Which backend ran, in one short line (the backend=auto lines came once, at the start)."""
    logger.info(backend_summary(JOBS))


def release_scheduler_timers():
    """Cancel this run's scheduler's pending re-evaluation timers once the run is over.

    Snakemake's job rate limiter re-arms a one-second threading.Timer after every scheduling
    pass (JobScheduler._schedule_reevalutation); Python waits for it at exit, so every finished
    run would end about a second after its last job. The run is complete here, so nothing needs
    them any more. Only the timers of workflow.scheduler are cancelled (facepipe.workflow.runmode.timers_of):
    any other timer in the process (a package's, a plugin's) is left alone.
    """
    if workflow.scheduler is not None:
        for timer in timers_of(workflow.scheduler):
            timer.cancel()


onsuccess:
    print_run_summary()
    print_backend_summary()
    release_scheduler_timers()


onerror:
    print_run_summary()
    print_backend_summary()
