"""What kind of file a target is (a still image or a video), told from its first bytes.

A module of its own, with no facepipe imports: media reads it for every probe, the workflow
for every job, and the code version of a stage (facepipe.workflow.provenance) follows each import.
"""

from __future__ import annotations

from pathlib import Path

# Suffixes that name a still image when the file cannot be read yet (a workflow-made input).
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".jfif", ".jpe", ".bmp", ".webp", ".tif", ".tiff"}

# ISO base media brands of HEIF/AVIF stills (ftyp box), which OpenCV may not decode.
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}


def sniff_image(head: bytes) -> str | None:
    """The still-image format a file's first bytes announce, or None (a video, or unknown)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"BM") and len(head) >= 14:
        return "bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "heif"
    return None


def target_kind(path: str | Path) -> str:
    """'image' or 'video', from the file's content (its suffix only when it does not exist yet).

    A still named .jfif, .heic or with no suffix at all is an image; an MP4 named .png is a video.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(32)
    except OSError:
        return "image" if path.suffix.lower() in IMAGE_SUFFIXES else "video"
    return "image" if sniff_image(head) else "video"
