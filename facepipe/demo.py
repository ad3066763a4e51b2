"""Demo and test inputs made from photos shipped inside installed packages.

insightface ships a group photo (t1.jpg); scikit-image ships NASA's public-domain portrait of
astronaut Eileen Collins. Clips are made from a still with a slow pan/zoom and a sine tone.
"""

from __future__ import annotations

from pathlib import Path

from facepipe.media import run_ffmpeg, write_png


def insightface_image(name: str = "t1.jpg") -> Path:
    import insightface

    path = Path(insightface.__file__).parent / "data" / "images" / name
    if not path.exists():
        raise FileNotFoundError(f"insightface does not ship {path}")
    return path


def write_astronaut(out: str | Path) -> Path:
    """scikit-image's astronaut photo as a BGR PNG (a single, frontal face)."""
    import cv2
    from skimage import data

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_png(out, cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    return out


def make_clip(image: str | Path, out: str | Path, *, seconds: float = 4, fps: int = 25,
              size: tuple[int, int] = (640, 360), audio: bool = True, zoom: float = 0.15,
              extra: list[str] | None = None) -> Path:
    """A pan/zoom clip of a still photo, with a 440 Hz tone unless audio=False."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frames = max(1, round(seconds * fps))
    w, h = size
    zoompan = (f"scale={w * 2}:-2,zoompan=z='1+{zoom}*on/{frames}':x='iw/2-(iw/zoom/2)':"
               f"y='ih/2-(ih/zoom/2)':d=1:s={w}x{h}:fps={fps},scale=out_range=tv,format=yuv420p")
    args = ["-loop", "1", "-framerate", str(fps), "-i", str(image)]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    args += ["-vf", zoompan, "-frames:v", str(frames), "-c:v", "libx264", "-preset", "veryfast", "-crf", "20"]
    if audio:
        args += ["-map", "0:v", "-map", "1:a", "-c:a", "aac", "-t", str(frames / fps)]
    args += list(extra or []) + [str(out)]
    run_ffmpeg(args, what=f"making clip {out.name}")
    return out


def make_demo_inputs(target: str | Path, source: str | Path, *, seconds: float = 4, fps: int = 25) -> None:
    """Write the demo's target clip and source photo, each under a temporary name first."""
    import os

    target, source = Path(target), Path(source)
    tmp_target = target.with_name(target.stem + ".partial" + target.suffix)
    tmp_source = source.with_name(source.stem + ".partial" + source.suffix)
    make_clip(insightface_image("t1.jpg"), tmp_target, seconds=seconds, fps=fps)
    write_astronaut(tmp_source)
    os.replace(tmp_target, target)
    os.replace(tmp_source, source)
