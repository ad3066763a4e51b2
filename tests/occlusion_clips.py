"""Clips of a real portrait with real cut-out objects in front of the face, for the occlusion tests.

The face is scikit-image's astronaut (NASA's portrait of Eileen Collins). The objects are cut from
photos shipped in installed packages:
- a cup: the espresso cup and saucer of scikit-image's coffee photo, cut out by GrabCut;
- a dark object: a piece of the black fabric of insightface's mask_black.jpg (a face mask);
- a skin-coloured object: a hand-shaped piece of real skin, from a forehead in insightface's t1.jpg.
Each clip returns its frames and, per frame, the object's own mask (where it covers the frame).
"""

from __future__ import annotations

import os

import cv2
import insightface
import numpy as np
from skimage import data

IMAGES = os.path.join(os.path.dirname(insightface.__file__), "data", "images")


def astronaut() -> np.ndarray:
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def cup() -> tuple[np.ndarray, np.ndarray]:
    """The cup and saucer of scikit-image's coffee photo and its alpha, cut out by GrabCut."""
    img = cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR)
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.grabCut(img, mask, (40, 10, 380, 330), np.zeros((1, 65)), np.zeros((1, 65)), 5, cv2.GC_INIT_WITH_RECT)
    alpha = np.where((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD), 255, 0).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(alpha)
    alpha = np.where(labels == 1 + np.argmax(stats[1:, cv2.CC_STAT_AREA]), 255, 0).astype(np.uint8)
    x, y, w, h = cv2.boundingRect(alpha)
    return img[y:y + h, x:x + w], alpha[y:y + h, x:x + w]


def dark_cloth() -> tuple[np.ndarray, np.ndarray]:
    """An oval piece of the black fabric of insightface's mask_black.jpg."""
    piece = cv2.imread(os.path.join(IMAGES, "mask_black.jpg"))[30:200, 60:380]
    alpha = np.zeros(piece.shape[:2], np.uint8)
    cv2.ellipse(alpha, (160, 85), (155, 70), 0, 0, 360, 255, -1)
    return piece, alpha


def skin_hand(t1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A hand-shaped piece (a palm and four fingers) of the forehead skin of t1.jpg's man in grey."""
    texture = cv2.resize(t1[300:330, 495:535], (160, 200), interpolation=cv2.INTER_CUBIC)
    alpha = np.zeros((200, 160), np.uint8)
    cv2.ellipse(alpha, (80, 140), (60, 55), 0, 0, 360, 255, -1)
    for i, x in enumerate((35, 65, 95, 125)):
        top = int(20 + abs(i - 1.5) * 14)
        cv2.rectangle(alpha, (x - 11, top), (x + 11, 140), 255, -1)
        cv2.circle(alpha, (x, top), 11, 255, -1)
    return texture, alpha


def overlay(frame: np.ndarray, obj: np.ndarray, alpha: np.ndarray, cx: float, cy: float):
    """obj pasted by its alpha with its centre at (cx, cy); the frame and the object's mask in it."""
    out = frame.copy()
    h, w = obj.shape[:2]
    x0, y0 = int(cx - w / 2), int(cy - h / 2)
    mask = np.zeros(frame.shape[:2], np.uint8)
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(frame.shape[1], x0 + w), min(frame.shape[0], y0 + h)
    if fx1 <= fx0 or fy1 <= fy0:
        return out, mask
    o = obj[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0].astype(np.float32)
    a = alpha[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0].astype(np.float32)[..., None] / 255
    out[fy0:fy1, fx0:fx1] = np.round(out[fy0:fy1, fx0:fx1] * (1 - a) + o * a).astype(np.uint8)
    mask[fy0:fy1, fx0:fx1] = (a[..., 0] > 0) * 255
    return out, mask


def clip(face: np.ndarray, obj: np.ndarray, alpha: np.ndarray, *, frames: int = 40, scale: float = 0.4,
         still_object: bool = False, size: int = 360) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The astronaut's face, zoomed to about 135 px wide in a size x size frame, with the object
    crossing it from left to right at the height of the nose and mouth; or (still_object) the face
    moving 80 px sideways under an object that stays put."""
    obj = cv2.resize(obj, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(alpha, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    out, masks = [], []
    for i in range(frames):
        t = i / (frames - 1)
        dx = (t - 0.5) * 80 if still_object else 0.0
        view = np.float32([[1.4, 0, -134 + dx], [0, 1.4, 10]])
        base = cv2.warpAffine(face, view, (size, size), borderMode=cv2.BORDER_REFLECT)
        if still_object:
            centre = (size * 0.5, size * 0.58)
        else:
            centre = (-60 + t * (size + 120), size * 0.56)
        frame, mask = overlay(base, obj, alpha, *centre)
        out.append(frame)
        masks.append(mask)
    return out, masks
