"""Checks made when the workflow builds its plan, before any job runs.

Everything that can be known before the heavy work is checked here, so that a job never
fails after minutes of detection and swapping for a reason that was visible at the start.
"""

from __future__ import annotations

import os
from pathlib import Path

from facepipe.filekind import sniff_image, target_kind


class PreflightError(Exception):
    """A job that would fail after the heavy work; the message names the job and the problem."""


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
    from facepipe.jobs import face_images

    for name, job in jobs.items():
        for role, file in {"target": job["target"], **face_images(job)}.items():
            path = (base / file).resolve()
            for folder in WORKFLOW_FOLDERS:
                if _inside(path, base / folder):
                    raise PreflightError(
                        f"job {name!r}: the {_role_text(role)} {file!r} lies inside {folder}/, which the workflow "
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
    import subprocess

    from facepipe.media import ffmpeg_exe

    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi",
            "-i", "color=c=gray:s=64x64:r=25:d=0.08", "-pix_fmt", "yuv420p", "-c:v", encoder]
    if preset:
        args += ["-preset", preset]
    if crf is not None and crf >= 0:
        args += ["-crf", str(crf)]
    args += ["-f", "null", "-"]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        import re

        # ffmpeg's first lines name the cause ("invalid preset", "Encoder not found"); the rest
        # is the teardown. Its "[module @ 0x...]" prefixes say nothing to a user.
        lines = [re.sub(r"^(\[[^]]*\]\s*)+", "", line) for line in proc.stderr.strip().splitlines()]
        detail = "; ".join(lines[:2]) or f"exit {proc.returncode}"
        raise PreflightError(f"encoder {encoder!r} (preset {preset!r}, crf {crf}) cannot encode with the bundled "
                             f"ffmpeg: {detail}. See `ffmpeg -encoders`; libx264 is the default")


def still_kind(path: str | Path) -> tuple[str | None, bool]:
    """(the still format a file's bytes announce or None, whether OpenCV decodes it)."""
    import cv2
    import numpy as np

    with open(path, "rb") as f:
        kind = sniff_image(f.read(32))
    decodable = kind is not None and cv2.imdecode(np.fromfile(path, dtype=np.uint8),
                                                  cv2.IMREAD_REDUCED_COLOR_2) is not None
    return kind, decodable


def check_target_readable_kind(name: str, target: str | Path) -> None:
    """A still target must be one OpenCV can read (HEIF/AVIF often is not)."""
    path = Path(target)
    if not path.is_file():
        return  # made by a rule, or missing: the probe names it
    kind, decodable = still_kind(path)
    if kind is not None and not decodable:
        raise PreflightError(f"job {name!r}: target file {str(path)!r} is a {kind.upper()} still image that "
                             f"cannot be decoded here; convert it to PNG or JPEG")


def check_face_image(name: str, role: str, image: str | Path) -> None:
    """A source or reference photo must be a still OpenCV can decode: a video, or an iPhone's
    HEIC, given as the face is named now, not after the target's detection."""
    path = Path(image)
    if not path.is_file():
        return  # made by a rule, or missing: Snakemake names a missing input itself
    kind, decodable = still_kind(path)
    if kind is None:
        raise PreflightError(f"job {name!r}: {role} file {str(path)!r} is not a still image (PNG, JPEG, BMP, "
                             f"WebP or TIFF); give a photo of the face")
    if not decodable:
        raise PreflightError(f"job {name!r}: {role} file {str(path)!r} is a {kind.upper()} image that cannot be "
                             f"decoded here" + ("; convert it to PNG or JPEG" if kind == "heif" else " (damaged?)"))


def check_jobs(jobs: dict[str, dict], workdir: str | Path = ".") -> None:
    """The checks that need only the job table: locations, name lengths, encoder settings (each
    tried once)."""
    check_input_locations(jobs, workdir)
    check_name_lengths(jobs, workdir)
    tried = set()
    for job in jobs.values():
        if target_kind(job["target"]) == "image":
            continue  # a still result is a PNG: no video encoder involved
        settings = (job["encoder"], job["preset"], job["crf"])
        if settings not in tried:
            check_encoder(*settings)
            tried.add(settings)


def check_input_files(name: str, job: dict, made_by_workflow=lambda path: False) -> None:
    """A job's own files: a still target OpenCV can decode, and source and reference photos that are
    decodable stills. Files a rule of the workflow makes (the demo's) are left to that rule and to
    the stage that reads them."""
    from facepipe.jobs import face_images

    if not made_by_workflow(job["target"]):
        check_target_readable_kind(name, job["target"])
    for role, file in face_images(job).items():
        if not made_by_workflow(file):
            check_face_image(name, _role_text(role), file)


def _role_text(role: str) -> str:
    """How an embedding role is named to the user: 'map0' is the map's first source photo."""
    if role.startswith("mapref"):
        return f"map entry {int(role[6:]) + 1}'s reference photo"
    if role.startswith("map"):
        return f"map entry {int(role[3:]) + 1}'s source photo"
    return role
