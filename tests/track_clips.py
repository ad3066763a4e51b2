"""Test clips for face tracking, built from real photos shipped inside installed packages.

``make_tracking_clip`` composes a short H.264 clip (with a 440 Hz tone) of two real people:

* person "A": scikit-image's astronaut (colour),
* person "B": insightface's ``Tom_Hanks_54745.png`` (a grey 112x112 face crop).

Shot 1 (3 s) shows them side by side on a plain background, A higher up and larger, B lower
and in front; over the shot they change places (A left -> right, B right -> left), their face
boxes never overlapping. B zooms up for a few frames near the end of the shot so that B's face
is the larger one there. A's face is made undetectable twice (a run of strong horizontal motion
blur, then a flat patch covering eyes to mouth) and B's once (motion blur). A hard cut then
leads to shot 2 (1.5 s) on another background (a blurred crop of insightface's group photo
t1.jpg), B now top left and A bottom right, both at new sizes and steadily visible.

Each person's true face box on every frame is the dlib box of the source photo carried through
the very transform the photo was pasted with, so the truth does not depend on running the
detector on the clip. Everything is deterministic (no randomness beyond a fixed-seed texture).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

PERSONS = ("A", "B")

Box = tuple[float, float, float, float]


@dataclass
class ClipTruth:
    fps: int
    size: tuple[int, int]  # (w, h)
    frames: int
    cut: int  # first frame (1-based) of the second shot
    # person -> per frame (index 0 = frame 1) the face box (x1, y1, x2, y2) in pixels, None when absent
    boxes: dict[str, list[Box | None]]
    # person -> 1-based frames where the face is blurred or covered (the detector must miss it)
    hidden: dict[str, set[int]]
    path: Path
    # how each hidden frame is hidden: (person, frame) -> "blur" or "cover"
    hidden_how: dict[tuple[str, int], str] = field(default_factory=dict)

    def box(self, person: str, frame: int) -> Box | None:
        """The true face box of ``person`` on 1-based ``frame`` (None when not in the frame)."""
        return self.boxes[person][frame - 1]

    def area(self, person: str, frame: int) -> float:
        b = self.box(person, frame)
        return 0.0 if b is None else (b[2] - b[0]) * (b[3] - b[1])

    def shot(self, frame: int) -> int:
        """1 or 2: the shot 1-based ``frame`` belongs to."""
        return 1 if frame < self.cut else 2

    def b_larger(self) -> list[int]:
        """Frames of shot 1 where B's face box is larger than A's and neither is hidden."""
        return [f for f in range(1, self.cut)
                if f not in self.hidden["A"] and f not in self.hidden["B"]
                and self.area("B", f) > self.area("A", f) > 0]


# ---------------------------------------------------------------------------------------------
# Source photos and their dlib face boxes


@dataclass(frozen=True)
class _Source:
    image: np.ndarray  # BGR float32
    alpha: np.ndarray  # float32 0..1, same height/width: the soft-edged part that is pasted
    box: np.ndarray  # dlib face box (x1, y1, x2, y2) in the image's pixels
    cover: np.ndarray  # eyes-to-mouth rectangle (x1, y1, x2, y2) from the 68 landmarks

    @property
    def centre(self) -> np.ndarray:
        return (self.box[:2] + self.box[2:]) / 2

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])


@lru_cache(maxsize=1)
def _analyzer():
    from tests.hog_analyzer import OfflineAnalyzer, landmarks_model_path
    from facepipe.models.dlib_face import offline_model_path

    return OfflineAnalyzer(landmarks_model_path(), offline_model_path("dlib_resnet_v1"),
                           threads=1, embed=False)


def _face(img: np.ndarray, near: tuple[float, float]) -> dict:
    """dlib's face nearest to ``near`` (the astronaut photo has a second, weak hit on her badge)."""
    faces = _analyzer().analyze(img)
    if not faces:
        raise RuntimeError("dlib found no face in a source photo of the tracking clip")
    return min(faces, key=lambda f: float(np.linalg.norm((f["box"][:2] + f["box"][2:]) / 2 - np.array(near))))


def _soft_rect(shape: tuple[int, int], rect: tuple[float, float, float, float], feather: float) -> np.ndarray:
    """A rectangle of ones fading to zero over ``feather`` px at its edges (inside the rectangle)."""
    h, w = shape
    x1, y1, x2, y2 = rect
    mask = np.zeros((h, w), np.float32)
    f = feather / 2
    cv2.rectangle(mask, (round(x1 + f), round(y1 + f)), (round(x2 - f), round(y2 - f)), 1.0, thickness=-1)
    return cv2.GaussianBlur(mask, (0, 0), feather / 2.5)


def _cover_rect(landmarks: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Eyebrows-to-below-the-mouth rectangle over the eyes' outer corners (and a margin)."""
    lm = np.asarray(landmarks, np.float32)
    w = float(box[2] - box[0])
    x1 = min(lm[36, 0], lm[17, 0]) - 0.04 * w
    x2 = max(lm[45, 0], lm[26, 0]) + 0.04 * w
    y1 = lm[17:27, 1].min() - 0.02 * w
    y2 = lm[48:60, 1].max() + 0.06 * w
    return np.array([x1, y1, x2, y2], np.float32)


@lru_cache(maxsize=1)
def _sources() -> dict[str, _Source]:
    from skimage import data

    from facepipe.media.demo import insightface_image

    # A: the astronaut, face and hair down to the top of the suit's neck ring.
    a = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    fa = _face(a, (200, 110))
    box = fa["box"].astype(np.float32)
    w, h = box[2] - box[0], box[3] - box[1]
    rect = (box[0] - 0.55 * w, box[1] - 0.75 * h, box[2] + 0.55 * w, box[3] + 0.45 * h)
    src_a = _Source(a.astype(np.float32), _soft_rect(a.shape[:2], rect, 0.22 * w), box,
                    _cover_rect(fa["landmarks"], box))

    # B: a tight 112x112 crop, the chin at its bottom edge; widened by padding whose content
    # is the border repeated and blurred, under a soft edge, so it pastes as a head.
    b = cv2.imread(str(insightface_image("Tom_Hanks_54745.png")))
    pad = 48
    padded = cv2.copyMakeBorder(b, pad, pad, pad, pad, cv2.BORDER_REPLICATE).astype(np.float32)
    inside = _soft_rect(padded.shape[:2], (pad - 3, pad - 3, pad + b.shape[1] + 3, pad + b.shape[0] + 3), 10)
    blurred = cv2.GaussianBlur(padded, (0, 0), 5)
    b_img = padded * inside[..., None] + blurred * (1 - inside[..., None])
    fb = _face(b_img.astype(np.uint8), (pad + 56, pad + 56))
    box = fb["box"].astype(np.float32)
    w, h = box[2] - box[0], box[3] - box[1]
    # Only a little above the box: B stands in front of (below) A, and its sprite must not
    # reach A's chin when they pass each other.
    rect = (box[0] - 0.30 * w, box[1] - 0.22 * h, box[2] + 0.30 * w, box[3] + 0.40 * h)
    src_b = _Source(b_img, _soft_rect(b_img.shape[:2], rect, 0.16 * w), box, _cover_rect(fb["landmarks"], box))
    return {"A": src_a, "B": src_b}


# ---------------------------------------------------------------------------------------------
# Backgrounds


def _background_1(w: int, h: int) -> np.ndarray:
    """A plain studio backdrop: a soft blue-grey vertical gradient with a faint mottled texture."""
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    top = np.array([150, 138, 120], np.float32)  # BGR
    bottom = np.array([96, 90, 82], np.float32)
    bg = np.broadcast_to(top * (1 - y) + bottom * y, (h, w, 3)).copy()
    rng = np.random.default_rng(20240611)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 6)
    noise *= 6.0 / max(float(noise.std()), 1e-6)
    return bg + noise[..., None]


def _background_2(w: int, h: int) -> np.ndarray:
    """insightface's group photo t1.jpg, cropped, warmed and blurred until no face is left in it."""
    from facepipe.media.demo import insightface_image

    t1 = cv2.imread(str(insightface_image("t1.jpg"))).astype(np.float32)
    crop = t1[:, 200:1280 - 80]  # wider than 16:9, resized to cover the frame
    scale = max(w / crop.shape[1], h / crop.shape[0])
    crop = cv2.resize(crop, (int(np.ceil(crop.shape[1] * scale)), int(np.ceil(crop.shape[0] * scale))),
                      interpolation=cv2.INTER_AREA)
    y0, x0 = (crop.shape[0] - h) // 2, (crop.shape[1] - w) // 2
    bg = cv2.GaussianBlur(crop[y0:y0 + h, x0:x0 + w], (0, 0), max(w, h) / 40)
    return bg * np.array([0.85, 0.95, 1.1], np.float32)


# ---------------------------------------------------------------------------------------------
# Timeline


def _smooth(t: float) -> float:
    t = min(max(t, 0.0), 1.0)
    return t * t * (3 - 2 * t)


def _layout(frames1: int, frames2: int, fps: int, w: int, h: int):
    """Per frame and person: (face centre x, face centre y, face height) in pixels, or None."""
    plan: dict[str, list] = {p: [] for p in PERSONS}
    # B's zoom: about 14 frames starting ~2.2 s into shot 1, while the two are well apart.
    z0 = round(2.2 * fps)
    ramp, hold = max(2, round(0.12 * fps)), max(4, round(0.32 * fps))
    for i in range(frames1):
        u = i / max(frames1 - 1, 1)
        # A: upper row, left -> right, face ~0.385 h tall with a slight drift in size.
        a_h = h * (0.385 + 0.01 * np.sin(2 * np.pi * u))
        a_x = w * (0.23 + 0.54 * u)
        a_y = 12 + a_h / 2 + h * 0.01 * np.sin(np.pi * u)
        # B: lower row (in front), right -> left, face ~0.333 h tall; zooms up to ~0.51 h.
        k = i - z0
        z = _smooth(k / ramp) if k < ramp + hold else _smooth((2 * ramp + hold - k) / ramp)
        b_h = h * (0.333 + 0.18 * z)
        b_x = w * (0.77 - 0.54 * u)
        b_bottom = h - 28 + 4 * z  # the zoom grows upwards (towards the camera), bottom fixed
        plan["A"].append((a_x, a_y, a_h))
        plan["B"].append((b_x, b_bottom - b_h / 2, b_h))
    for i in range(frames2):
        u = i / max(frames2 - 1, 1)
        # Shot 2: B top left, A bottom right, both at new sizes, a slow drift only.
        plan["B"].append((w * (0.27 + 0.02 * u), h * 0.36, h * 0.37))
        plan["A"].append((w * (0.72 - 0.02 * u), h * 0.60 + 2 * u, h * 0.42))
    return plan


def _runs(frames1: int, fps: int) -> dict[str, dict[int, str]]:
    """person -> {1-based frame: "blur" | "cover"}; runs >= 10 frames apart, away from the cut."""
    a_blur = round(0.44 * fps) + 1
    b_blur = round(1.0 * fps) + 1
    a_cover = round(1.88 * fps) + 1
    runs = {"A": {}, "B": {}}
    for f in range(a_blur, a_blur + 3):
        runs["A"][f] = "blur"
    for f in range(a_cover, a_cover + 3):
        runs["A"][f] = "cover"
    for f in range(b_blur, b_blur + 2):
        runs["B"][f] = "blur"
    assert max(runs["A"]) <= frames1 - 10
    return runs


# ---------------------------------------------------------------------------------------------
# Rendering


def _paste(frame: np.ndarray, src: _Source, cx: float, cy: float, face_h: float) -> tuple[Box, np.ndarray]:
    """Paste ``src`` scaled so its face box is ``face_h`` tall and centred on (cx, cy).

    Returns the face box in the frame and the affine matrix used.
    """
    h, w = frame.shape[:2]
    s = face_h / src.height
    c = src.centre
    m = np.array([[s, 0, cx - s * c[0]], [0, s, cy - s * c[1]]], np.float32)
    img = cv2.warpAffine(src.image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(src.alpha, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=0)[..., None]
    frame *= 1 - alpha
    frame += img * alpha
    x1, y1 = m[:, :2] @ src.box[:2] + m[:, 2]
    x2, y2 = m[:, :2] @ src.box[2:] + m[:, 2]
    return (round(float(x1), 1), round(float(y1), 1), round(float(x2), 1), round(float(y2), 1)), m


def _grow(box, f: float, w: int, h: int) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * f, (y2 - y1) * f
    return max(x1 - dx, 0), max(y1 - dy, 0), min(x2 + dx, w), min(y2 + dy, h)


def _motion_blur(frame: np.ndarray, box: Box, length: int) -> None:
    """Strong horizontal motion blur over the face (and a margin), soft-edged, in place."""
    h, w = frame.shape[:2]
    kernel = np.full((1, length), 1.0 / length, np.float32)
    blurred = cv2.filter2D(frame, -1, kernel, borderType=cv2.BORDER_REFLECT)
    mask = _soft_rect((h, w), _grow(box, 0.35, w, h), 12)[..., None]
    frame *= 1 - mask
    frame += blurred * mask


def _cover(frame: np.ndarray, src: _Source, m: np.ndarray) -> None:
    """A flat patch, the face's own mean colour, from the eyebrows to below the mouth, in place."""
    x1, y1 = m[:, :2] @ src.cover[:2] + m[:, 2]
    x2, y2 = m[:, :2] @ src.cover[2:] + m[:, 2]
    x1, y1, x2, y2 = int(np.floor(x1)), int(np.floor(y1)), int(np.ceil(x2)), int(np.ceil(y2))
    region = frame[y1:y2, x1:x2]
    region[:] = region.reshape(-1, 3).mean(axis=0)


def render_frames(fps: int = 25, size: tuple[int, int] = (480, 270)):
    """(truth without path, iterator of BGR uint8 frames) of the tracking clip."""
    w, h = size
    frames1, frames2 = round(3.0 * fps), round(1.5 * fps)
    total = frames1 + frames2
    plan = _layout(frames1, frames2, fps, w, h)
    runs = _runs(frames1, fps)
    sources = _sources()
    backgrounds = (_background_1(w, h), _background_2(w, h))
    blur_len = max(3, round(31 * h / 270)) | 1
    boxes: dict[str, list] = {p: [None] * total for p in PERSONS}
    truth = ClipTruth(fps=fps, size=(w, h), frames=total, cut=frames1 + 1, boxes=boxes,
                      hidden={p: set(runs[p]) for p in PERSONS}, path=Path(),
                      hidden_how={(p, f): how for p in PERSONS for f, how in runs[p].items()})

    def frames():
        for i in range(total):
            frame = backgrounds[0 if i < frames1 else 1].copy()
            placed = {}
            for person in PERSONS:  # A first: B stands in front
                spec = plan[person][i]
                if spec is None:
                    continue
                placed[person] = _paste(frame, sources[person], *spec)
            for person, (box, m) in placed.items():
                how = runs[person].get(i + 1)
                if how == "blur":
                    _motion_blur(frame, box, blur_len)
                elif how == "cover":
                    _cover(frame, sources[person], m)
            yield np.clip(frame + 0.5, 0, 255).astype(np.uint8)

    # The boxes depend only on the layout: fill them before any frame is rendered.
    for person in PERSONS:
        src = sources[person]
        for i, spec in enumerate(plan[person]):
            if spec is None:
                continue
            cx, cy, face_h = spec
            s = face_h / src.height
            c = src.centre
            box = tuple(round(float(v), 1) for v in (cx + s * (src.box[0] - c[0]), cy + s * (src.box[1] - c[1]),
                                                     cx + s * (src.box[2] - c[0]), cy + s * (src.box[3] - c[1])))
            if not (0 <= box[0] and 0 <= box[1] and box[2] <= w and box[3] <= h):
                raise AssertionError(f"{person}'s face leaves the frame on frame {i + 1}: {box}")
            boxes[person][i] = box
    return truth, frames()


def make_tracking_clip(out: Path, *, fps: int = 25, size=(480, 270), audio: bool = True) -> ClipTruth:
    """Write the tracking test clip to ``out`` (MP4, H.264 yuv420p, AAC tone) and return its truth."""
    out = Path(out)
    w, h = size
    if w % 2 or h % 2:
        raise ValueError(f"size must be even for yuv420p, got {size}")
    truth, frames = render_frames(fps, (w, h))
    encode_clip(out, frames, truth.frames, fps=fps, size=size, audio=audio)
    truth.path = out
    return truth


def encode_clip(out: Path, frames, count: int, *, fps: int, size: tuple[int, int], audio: bool = True) -> None:
    """``count`` BGR frames of ``size`` written to ``out`` as H.264 yuv420p MP4 (with a 440 Hz AAC
    tone as long as the video), through a partial file."""
    from facepipe.media.ffmpeg import ffmpeg_exe

    w, h = size
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".partial" + out.suffix)
    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "-"]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    args += ["-map", "0:v", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
             "-frames:v", str(count)]
    if audio:
        args += ["-map", "1:a", "-c:a", "aac", "-b:a", "96k", "-t", f"{count / fps:.6f}"]
    args += ["-movflags", "+faststart", "-f", "mp4", str(tmp)]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
        try:
            for frame in frames:
                proc.stdin.write(frame.tobytes())
        except BrokenPipeError:
            pass
        finally:
            proc.stdin.close()
            rc = proc.wait()
        if rc != 0:
            log.seek(0)
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"ffmpeg failed ({rc}) making {out.name}: {log.read().decode(errors='replace')[-2000:]}")
    os.replace(tmp, out)
