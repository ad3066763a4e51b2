"""Checks made when the workflow builds its plan, before any job runs.

Everything that can be known before the heavy work is checked here, so that a job never
fails after minutes of detection and swapping for a reason that was visible at the start.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from facepipe.faces import roles
from facepipe.media.container import open_packets
from facepipe.media.filekind import sniff_image, target_kind
from facepipe.workflow.jobs import face_images


class PreflightError(Exception):
    """A job that would fail after the heavy work; the message names the job and the problem."""


def stop_run(message: str, *, at_once: bool = False, workflow=None) -> NoReturn:
    """End the run over a user's mistake with one line on standard error: no traceback and no
    Snakemake banner, which say nothing to a user and push the line off the screen.

    While the Snakefile is read, SystemExit passes through Snakemake untouched. Inside an input
    function (at_once) Snakemake wraps every exception, SystemExit included, in its banner; there
    the process ends at once: nothing has started then (Snakemake takes its lock and starts jobs
    only once the plan is built), and workflow's temporary folder is removed first.
    """
    sys.stdout.flush()
    print(f"facepipe: error: {message}", file=sys.stderr, flush=True)
    if not at_once:
        raise SystemExit(1)
    tmp = getattr(workflow, "_snakemake_tmp_dir", None)
    if tmp is not None and hasattr(tmp, "cleanup"):
        tmp.cleanup()
    os._exit(1)


def file_hint(path: str | Path) -> str:
    """What a user may not see in a path: spaces at its ends, a line break."""
    text = str(path)
    if text != text.rstrip():
        return " (note the trailing space)"
    if text != text.lstrip():
        return " (note the leading space)"
    if any(c in text for c in "\r\n\t"):
        return " (note the line break or tab in it)"
    return ""


def check_readable(name: str, role: str, path: str | Path) -> None:
    """A job's own input file exists, is a file and can be read (a missing target was
    Snakemake's MissingInputException, far from the job that names it)."""
    file = Path(path)
    if not file.exists():
        raise PreflightError(f"job {name!r}: no such file: {str(path)!r}{file_hint(path)}; fix the {role} "
                             f"path (relative paths start at the workflow folder)")
    if not file.is_file():
        raise PreflightError(f"job {name!r}: the {role} {str(path)!r} is a folder, not a file; give the file's path")
    try:
        with open(file, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise PreflightError(f"job {name!r}: the {role} {str(path)!r} cannot be read ({exc.strerror}); "
                             f"check its permissions") from None


def check_names(jobs: dict[str, dict]) -> None:
    """Job names become file names and Snakemake wildcard values: braces would be read as
    wildcards, and control characters (a line break from a quoted sheet cell) break the logs,
    the mux's arguments and the user's shell."""
    for name in jobs:
        if "{" in name or "}" in name:
            raise PreflightError(f"job {name!r}: a job name may not contain braces {{ or }} (Snakemake reads them "
                                 f"as wildcards); rename the job in the sheet's name column or with name=...")
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise PreflightError(f"job {name!r}: a job name may not contain a line break, tab or other control "
                                 f"character; rename the job in the sheet's name column or with name=...")


# The folders a run writes into (with .snakemake/, which Snakemake itself needs first).
OUTPUT_FOLDERS = ("results", "work", "logs", "benchmarks")


def check_writable(workdir: str | Path = ".") -> None:
    """Every folder a run writes can be written, tried with a real file: a read-only mount or
    folder otherwise fails at the first job's output (an OSError traceback), after the work."""

    base = Path(workdir)
    for folder in OUTPUT_FOLDERS:
        path = base / folder
        where = path if path.exists() else base
        if path.exists() and not path.is_dir():
            raise PreflightError(f"{folder}/ is not a folder ({str(path)!r} is a file): move the file away")
        try:
            with tempfile.NamedTemporaryFile(dir=where, prefix=".facepipe-write-check-"):
                pass
        except OSError as exc:
            why = "on a read-only file system" if exc.errno == errno.EROFS else f"not writable ({exc.strerror})"
            raise PreflightError(f"{folder}/ ({str(path.resolve())!r}) is {why}: results cannot be written; make it "
                                 f"writable, or run the workflow from a copy in a folder you can write") from None


# Folders the workflow writes: an input inside them would be overwritten, removed or be its
# own output (results/x.mp4 as the target of job x is a cycle).
WORKFLOW_FOLDERS = ("results", "work")
# The longest suffix the workflow appends to a job name in one path component (results/NAME.mp4,
# results/NAME.png, results/NAME.cast.png); temporary files use short names of their own.
RESULT_SUFFIX_BYTES = len(".cast.png")


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def check_input_locations(jobs: dict[str, dict], workdir: str | Path = ".") -> None:
    """No target, source or reference lies inside results/ or work/."""
    base = Path(workdir).resolve()
    for name, job in jobs.items():
        for role, file in {"target": job["target"], **face_images(job)}.items():
            path = (base / file).resolve()
            for folder in WORKFLOW_FOLDERS:
                if _inside(path, base / folder):
                    raise PreflightError(
                        f"job {name!r}: the {roles.describe(role)} {file!r} lies inside {folder}/, which the workflow "
                        f"writes (its files are made, replaced and removed by runs): move it elsewhere")


def check_name_lengths(jobs: dict[str, dict], workdir: str | Path = ".") -> None:
    """Every path the workflow makes for a job fits the file system's limits."""
    base = Path(workdir).resolve()
    try:
        name_max = os.pathconf(base, "PC_NAME_MAX")
        path_max = os.pathconf(base, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        name_max, path_max = 255, 4096
    for name in jobs:
        size = len(name.encode()) + RESULT_SUFFIX_BYTES
        if size > name_max:
            raise PreflightError(
                f"job {name!r}: the name is {len(name.encode())} bytes; with its suffix the result's file "
                f"name would exceed this file system's limit of {name_max} bytes. Give the job a name of at "
                f"most {name_max - RESULT_SUFFIX_BYTES} bytes (name=... or the sheet's name column)")
        longest = base / "benchmarks" / name / "enhance_faces" / "seg_0000.tsv"
        if len(str(longest).encode()) + 64 > path_max:
            raise PreflightError(f"job {name!r}: paths under {base} would exceed the limit of {path_max} bytes")


def check_encoder(encoder: str, preset: str, crf: int | None) -> None:
    """Encode one tiny frame with the job's encoder settings, as rendering will: an encoder the
    bundled ffmpeg lacks, or a preset or quality it refuses, is an error now, not after detection
    and swapping."""

    # lazy: the Snakefile imports this module while it parses, so it loads only what it uses
    from facepipe.media.ffmpeg import ffmpeg_exe

    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi",
            "-i", "color=c=gray:s=64x64:r=25:d=0.08", "-pix_fmt", "yuv420p", "-c:v", encoder]
    if preset:
        args += ["-preset", preset]
    if crf is not None and crf >= 0:
        args += ["-crf", str(crf)]
    args += ["-f", "null", "-"]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        # lazy: imported only on the path that needs it
        import re

        # ffmpeg's first lines name the cause ("invalid preset", "Encoder not found"); the rest
        # is the teardown. Its "[module @ 0x...]" prefixes say nothing to a user.
        lines = [re.sub(r"^(\[[^]]*\]\s*)+", "", line) for line in proc.stderr.strip().splitlines()]
        detail = "; ".join(lines[:2]) or f"exit {proc.returncode}"
        raise PreflightError(f"encoder {encoder!r} (preset {preset!r}, crf {crf}) cannot encode with the bundled "
                             f"ffmpeg: {detail}. See `ffmpeg -encoders`; libx264 is the default")


def still_kind(path: str | Path) -> tuple[str | None, bool]:
    """(the still format a file's bytes announce or None, whether read_image decodes it)."""
    # lazy: the Snakefile imports this module while it parses, so it loads only what it uses
    from facepipe.media.files import image_decodable

    with open(path, "rb") as f:
        kind = sniff_image(f.read(32))
    return kind, kind is not None and image_decodable(path)


def check_target_readable_kind(name: str, target: str | Path) -> None:
    """A still target must be one read_image decodes (a HEIF without pillow-heif is not); any other target a
    container with a video stream (its header only: the prepare_target job measures the rest), so an
    empty or damaged file is named now, not in a failing job."""
    path = Path(target)
    if not path.is_file():
        return  # made by a rule, or missing: the probe names it
    kind, decodable = still_kind(path)
    if kind is not None and not decodable:
        raise PreflightError(f"job {name!r}: target file {str(path)!r} is a {kind.upper()} still image that "
                             f"cannot be decoded here; convert it to PNG or JPEG")
    if kind is not None:
        return
    if path.stat().st_size == 0:
        raise PreflightError(f"job {name!r}: target file {str(path)!r} is empty (0 bytes); give the video or image "
                             f"itself (a copy that did not finish?)")
    try:
        with open_packets(path) as container:
            has_video = bool(container.streams.video)
    except Exception as exc:  # PyAV raises a family of errors; all mean "not media we can read"
        detail = " ".join(str(exc).split())
        raise PreflightError(f"job {name!r}: target file {str(path)!r} is not a readable video or image ({detail}); "
                             f"give a video (MP4, MOV, MKV, ...) or an image (PNG, JPEG, ...)") from None
    if not has_video:
        raise PreflightError(f"job {name!r}: target file {str(path)!r} has no video stream (only sound?); give a "
                             f"video or an image")


def check_face_image(name: str, role: str, image: str | Path) -> None:
    """A source or reference photo must be a still read_image decodes: a video, or a damaged
    photo, given as the face is named now, not after the target's detection."""
    path = Path(image)
    if not path.is_file():
        return  # made by a rule, or missing: Snakemake names a missing input itself
    kind, decodable = still_kind(path)
    if kind is None:
        raise PreflightError(f"job {name!r}: {role} file {str(path)!r} is not a still image (PNG, JPEG, HEIC, "
                             f"AVIF, BMP, WebP or TIFF); give a photo of the face")
    if not decodable:
        raise PreflightError(f"job {name!r}: {role} file {str(path)!r} is a {kind.upper()} image that cannot be "
                             f"decoded here" + ("; convert it to PNG or JPEG" if kind == "heif" else " (damaged?)"))


def check_jobs(jobs: dict[str, dict], workdir: str | Path = ".", *, try_outputs: bool = True) -> None:
    """The checks that need only the job table: names, locations, name lengths, writable output
    folders, encoder settings (each tried once). The last two write a file and start ffmpeg: only
    with `try_outputs` (a real run; a dry run leaves them)."""
    check_names(jobs)
    check_input_locations(jobs, workdir)
    check_name_lengths(jobs, workdir)
    if not try_outputs:
        return
    check_writable(workdir)
    tried = set()
    for job in jobs.values():
        if target_kind(job["target"]) == "image":
            continue  # a still result is a PNG: no video encoder involved
        settings = (job["encoder"], job["preset"], job["crf"])
        if settings not in tried:
            check_encoder(*settings)
            tried.add(settings)


def check_input_files(name: str, job: dict, made_by_workflow=lambda path: False) -> None:
    """A job's own files: a target that exists and can be read (a still one read_image decodes),
    and source and reference photos that are decodable stills. Files a rule of the workflow makes
    (the demo's) are left to that rule and to the stage that reads them."""
    if not made_by_workflow(job["target"]):
        check_readable(name, "target", job["target"])
        check_target_readable_kind(name, job["target"])
    for role, file in face_images(job).items():
        if not made_by_workflow(file):
            check_readable(name, roles.describe(role), file)
            check_face_image(name, roles.describe(role), file)


def check_face_photos(name: str, job: dict, detector: str | Path, recognizer: str | Path, *,
                      cache_dir: str | Path, made_by_workflow=lambda path: False,
                      save_cache: bool = True) -> list[str]:
    """The face of each of a job's photos (source, reference, map photos), found with the job's own
    detector and recognizer on the CPU, once per photo and models (the embedding cache, which
    embed_face then reads): PreflightError for a photo without a face, or without the face
    source_face asks for. Returns a warning line per photo that shows several faces, saying which
    one is used, and per source photo whose face is too small for the swapper or that is greyscale.
    Photos a rule of the workflow makes (the demo's) are left to their embed_face jobs, as
    check_input_files leaves them to their rules. save_cache=False (a dry run) reads the cache but
    writes nothing to it."""
    # lazy: the Snakefile imports this module while it parses, so it loads only what it uses
    from facepipe.faces.embedding import face_record, needed_face_size, source_warnings

    # lazy: the Snakefile imports this module while it parses, so it loads only what it uses
    from facepipe.media.files import MediaError, read_image

    # lazy: the Snakefile imports this module while it parses, so it loads only what it uses
    from facepipe.models.face_analyzer import FaceError

    lines = []
    for role, image in face_images(job).items():
        if made_by_workflow(image) or not Path(image).is_file():
            continue
        face_index = job["source_face"] if role == roles.SOURCE else -1
        # pick_face's own warning about several faces is for embed_face's log: the console gets
        # the line below, which names the job.
        faces_log = logging.getLogger("facepipe.faces.detection")
        level = faces_log.level
        faces_log.setLevel(logging.ERROR)
        try:
            record = face_record(image, detector, recognizer, providers=["cpu"], face_index=face_index,
                                 cache_dir=cache_dir, backend=job["backend"], save=save_cache)
        except (FaceError, MediaError) as exc:
            raise PreflightError(f"job {name!r}, {roles.describe(role)}: {exc}") from None
        finally:
            faces_log.setLevel(level)
        count = int(record.get("face_count", 1))
        if count > 1:
            used = "the largest (face 0)" if face_index is None or face_index < 0 else f"face {face_index}"
            how = ("set source_face=N to use another (0 = the largest)" if role == "source"
                   else "crop the photo to the one person to use another")
            lines.append(f"job {name!r}: the {roles.describe(role)} {str(image)!r} shows {count} faces: using {used}; "
                         f"{how}")
        if roles.is_swap_source(role):
            # A face too small for the swapper, or a greyscale photo: said now, on the console, and
            # again in embed_face's log (facepipe.faces.embedding.embed_image).
            needed = needed_face_size(job["backend"], job.get("swapper") or "")
            lines += [f"job {name!r}: {line}" for line in source_warnings(image, read_image(image), record["kps"],
                                                                          *needed)]
    return lines


@contextmanager
def package_warnings_to(console):
    """Within the block, the package's warnings (logger "facepipe") go to ``console`` (Snakemake's
    logger in the main process, which has no handler for them) as "WARNING name: message"."""

    class Forward(logging.Handler):
        def emit(self, record):
            console.warning(f"WARNING {record.name}: {record.getMessage()}")

    handler = Forward(logging.WARNING)
    package = logging.getLogger("facepipe")
    package.addHandler(handler)
    try:
        yield
    finally:
        package.removeHandler(handler)


def models_for_check(backend: str, keys: list[str], folder: str | Path) -> list[Path] | None:
    """The job's detector and recognizer (keys) for the photo check of a run whose model rules
    have not run yet (they run only once the plan is built), made as those rules make them, in a
    folder of the run's own: a stand-in is generated, an offline model converted from its package
    file (seconds; the conversion makes the mesh beside the detector too); a package file is used
    where it is. None when a model would have to be downloaded: the embed_face job checks then."""
    # lazy: the Snakefile imports this module while it parses, so it loads only what it uses
    from facepipe.models import MODELS, model_files, model_path

    # lazy: the Snakefile imports this module while it parses, so it loads only what it uses
    from facepipe.models.registry import backend as backend_spec

    # lazy: the Snakefile imports this module while it parses, so it loads only what it uses
    from facepipe.models.registry import conversion_source, converted, converted_files, converter

    folder = Path(folder)
    paths = []
    for key in keys:
        spec, where = MODELS[key], model_path(key, backend)
        if all(path.is_file() for path in model_files(key, backend)):
            paths.append(where)
        elif backend_spec(backend).standin:
            # lazy: the stand-in builder, with onnx, is slow to import, and only this path needs it
            from facepipe.models.standin import build_standin

            paths.append(build_standin(key, folder / "standin" / spec.filename))
        elif spec.converted_from:
            for made in converted():
                if not all(path.is_file() for path in converted_files(made, backend, folder)):
                    converter(made)(conversion_source(made), model_path(made, backend, folder))
            paths.append(model_path(key, backend, folder))
        else:
            return None
    return paths
