"""Demo and test inputs made from photos shipped inside installed packages.

insightface ships a group photo (t1.jpg); scikit-image ships NASA's public-domain portrait of
astronaut Eileen Collins. Test clips are made from a still with a slow pan/zoom and a sine tone;
the demo's clip is a close-up of one face of the group photo that turns a little (make_demo_clip),
so that the swap can be seen at normal size.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2

from facepipe.media.ffmpeg import run_ffmpeg
from facepipe.media.files import write_png


def insightface_image(name: str = "t1.jpg") -> Path:
    # lazy: insightface is slow to import, and only this path needs it
    import insightface

    path = Path(insightface.__file__).parent / "data" / "images" / name
    if not path.exists():
        raise FileNotFoundError(f"insightface does not ship {path}")
    return path


def write_astronaut(out: str | Path) -> Path:
    """scikit-image's astronaut photo as a BGR PNG (a single, frontal face)."""
    # lazy: scikit-image is slow to import, and only this path needs it
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


# The demo's face: the man at the centre of t1.jpg, (x, y, width, height) of dlib's box of him in the
# photo (108 px). He is seen from the front with room on every side for the turn, and he is the only
# whole face in the close-up, so faces=one (the largest screen presence) swaps him.
DEMO_FACE = (724, 367, 109, 108)
DEMO_ZOOM = 1.7  # photo pixels to clip pixels: his box becomes about 180 px in a 640x360 clip
DEMO_TURN = 0.1  # the perspective of a turn: one side of the picture this fraction taller than the other
DEMO_ROLL = 0.06  # radians: a gentle tilt of the head, back and forth


def make_demo_clip(out: str | Path, *, seconds: float = 4, fps: int = 25, size: tuple[int, int] = (640, 360),
                   audio: bool = True) -> Path:
    """The demo's target: a close-up of DEMO_FACE in t1.jpg that turns a little (a perspective change
    like a slight yaw, one cycle over the clip) and tilts (a slow roll), with a 440 Hz tone."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frames = max(1, round(seconds * fps))
    w, h = size
    x, y, fw, fh = DEMO_FACE
    cx, cy = x + fw / 2, y + fh / 2
    view_w, view_h = round(w / DEMO_ZOOM), round(h / DEMO_ZOOM)  # what the clip shows, in photo pixels
    margin = round(0.15 * view_w)  # photo around the view, so the turn and the tilt never show an edge
    crop_w, crop_h = view_w + 2 * margin, view_h + 2 * margin
    crop_x, crop_y = round(cx - crop_w / 2), round(cy - crop_h / 2)
    turn = f"{DEMO_TURN / 2}*H*sin(2*PI*in/{frames})"  # ffmpeg evaluates it per frame (eval=frame)
    video = (f"crop={crop_w}:{crop_h}:{crop_x}:{crop_y},"
             f"perspective=x0=0:y0='{turn}':x1=W:y1='-{turn}':x2=0:y2='H-{turn}':x3=W:y3='H+{turn}'"
             f":eval=frame:interpolation=cubic,"
             f"rotate=a='{DEMO_ROLL}*sin(2*PI*t/{frames / fps}+1)',crop={view_w}:{view_h},"
             f"scale={w}:{h}:flags=bicubic,scale=out_range=tv,format=yuv420p")
    args = ["-loop", "1", "-framerate", str(fps), "-i", str(insightface_image("t1.jpg"))]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    args += ["-vf", video, "-frames:v", str(frames), "-c:v", "libx264", "-preset", "veryfast", "-crf", "20"]
    if audio:
        args += ["-map", "0:v", "-map", "1:a", "-c:a", "aac", "-t", str(frames / fps)]
    run_ffmpeg(args + [str(out)], what=f"making the demo clip {out.name}")
    return out


def make_demo_inputs(target: str | Path, source: str | Path, *, seconds: float = 4, fps: int = 25) -> None:
    """Write the demo's target clip and source photo, each under a temporary name first."""

    target, source = Path(target), Path(source)
    tmp_target = target.with_name(target.stem + ".partial" + target.suffix)
    tmp_source = source.with_name(source.stem + ".partial" + source.suffix)
    make_demo_clip(tmp_target, seconds=seconds, fps=fps)
    write_astronaut(tmp_source)
    os.replace(tmp_target, target)
    os.replace(tmp_source, source)
