"""Media I/O: probing the target, reading images, running ffmpeg, muxing the result.

FFmpeg comes from the `imageio-ffmpeg` wheel (no system ffmpeg needed); probing uses PyAV
so that frame counts come from the real packets rather than from the container header.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

AI_LABEL = "AI-generated: face swapped by facepipe (synthetic media)"
# The PNG text chunk holding a result's provenance record (facepipe.workflow.provenance).
RECORD_KEY = "facepipe_record"


class MediaError(Exception):
    """A target or source file that cannot be used; the message names the file and the problem."""


def write_json(path: str | Path, data: dict) -> None:
    """Write JSON atomically so a killed job never leaves a half-written file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json_text(data))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # after a failed write (a full disk): nothing left behind


def json_text(data: dict) -> str:
    """How the workflow writes its JSON files (stable: equal data, equal bytes)."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


@contextlib.contextmanager
def atomic_output_dir(path: str | Path):
    """Fill a directory output under a temporary name and move it into place only when complete.

    A killed job then leaves `<dir>.partial`, never a half-filled output that a later run could
    take for finished (Snakemake's own incomplete markers are not checked for every job that a
    checkpoint adds to the DAG). A stale `.partial` from an earlier kill is removed first.
    """
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    try:
        yield partial
        if path.exists():
            shutil.rmtree(path)
        os.replace(partial, path)
    finally:
        # A failure (a full disk, a bad target) leaves nothing half-made to fill the disk.
        shutil.rmtree(partial, ignore_errors=True)


class AtomicWriter:
    """A writer used as a context manager: close() (the output appears under its name) when the
    block ends normally, abort() (nothing is left) when it raises. Subclasses define both."""

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
            return
        try:
            self.close()
        except BaseException:
            # close() itself can fail (the last write or the footer hits a full disk): the
            # temporary file must go as well, or it keeps the disk full.
            self.abort()
            raise


def check_input_file(path: str | Path, role: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{role} file {str(path)!r} does not exist")
    if path.is_dir():
        raise MediaError(f"{role} path {str(path)!r} is a directory, expected a video or image file")
    if path.stat().st_size == 0:
        raise MediaError(f"{role} file {str(path)!r} is empty (0 bytes)")
    return path


def read_image(path: str | Path, role: str = "image") -> np.ndarray:
    """Read an image as BGR uint8, upright (EXIF orientation); unicode and odd characters in the path
    are fine. OpenCV first; what it cannot decode, Pillow (with pillow-heif: an iPhone's HEIC)."""
    path = check_input_file(path, role)
    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        img = _read_with_pillow(path)
    if img is None:
        raise MediaError(f"{role} file {str(path)!r} is not a readable image")
    return img


def image_decodable(path: str | Path) -> bool:
    """Whether read_image can decode a file (quickly where OpenCV can: at half size)."""
    if cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_REDUCED_COLOR_2) is not None:
        return True
    return _read_with_pillow(path) is not None


def _open_with_pillow(path: str | Path):
    """Pillow's Image of a file, with HEIF's opener where pillow-heif is installed."""
    # lazy: Pillow and pillow-heif are slow to import, and only these paths need them
    from PIL import Image

    try:
        from pillow_heif import register_heif_opener
    except ImportError:  # an environment without it reads everything else
        pass
    else:
        register_heif_opener()
    return Image.open(path)


def _upright_with_pillow(path: str | Path, mode: str, keep=None) -> np.ndarray | None:
    """The image in Pillow's ``mode``, upright by its EXIF orientation (as OpenCV turns it), or
    None: a format Pillow does not read, or ``keep(image)`` false."""
    # lazy: Pillow is slow to import, and only this path needs it
    from PIL import ImageOps, UnidentifiedImageError

    try:
        with _open_with_pillow(path) as im:
            if keep is not None and not keep(im):
                return None
            return np.asarray(ImageOps.exif_transpose(im).convert(mode))
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def _read_with_pillow(path: str | Path) -> np.ndarray | None:
    rgb = _upright_with_pillow(path, "RGB")
    return None if rgb is None else np.ascontiguousarray(rgb[:, :, ::-1])


def read_alpha(path: str | Path) -> np.ndarray | None:
    """An image's transparency (uint8, 255: opaque), turned upright as read_image turns the picture
    (EXIF orientation), or None where it has none: no alpha channel or transparent colour, or every
    pixel opaque, or a format Pillow does not read."""
    rgba = _upright_with_pillow(path, "RGBA", keep=lambda im: "A" in im.getbands() or "transparency" in im.info)
    if rgba is None or rgba[..., 3].min() == 255:
        return None
    return np.ascontiguousarray(rgba[..., 3])


def write_png(path: str | Path, img: np.ndarray, compression: int = 1) -> None:
    # Low PNG compression: frames are intermediates, speed matters more than size.
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise MediaError(f"could not encode PNG for {path}")
    buf.tofile(str(path))


def write_labelled_png(img: np.ndarray, out: str | Path, record: str | None = None,
                       texts: dict[str, str] | None = None, alpha: np.ndarray | None = None) -> None:
    """Write a still result (BGR) marked as AI-generated in a PNG text chunk, and its record
    (read_result_record) in another; texts: more text chunks (a sheet's layout); alpha: its
    transparency (uint8, the image's size), where the target had one."""
    # lazy: Pillow is slow to import, and only this path needs it
    from PIL import Image, PngImagePlugin

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", AI_LABEL)
    info.add_text("Software", "facepipe")
    if record is not None:
        # Pillow writes an iTXt chunk (UTF-8) when the text is not Latin-1.
        info.add_text(RECORD_KEY, record)
    for key, text in (texts or {}).items():
        info.add_text(key, text)
    tmp = temporary_beside(out, ".png")
    try:
        rgb = img[:, :, ::-1]
        picture = Image.fromarray(np.ascontiguousarray(rgb if alpha is None else np.dstack([rgb, alpha])))
        picture.save(tmp, format="PNG", pnginfo=info)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def temporary_beside(out: str | Path, suffix: str) -> Path:
    """A temporary file's path in out's folder, named after a digest of out's name: the same job
    reuses (and so replaces) its own leftovers, and the name stays short whatever the job is
    called (results/NAME.mp4 may already be at the file system's name limit)."""

    out = Path(out)
    return out.with_name(f".{hashlib.sha256(out.name.encode()).hexdigest()[:12]}.partial{suffix}")
