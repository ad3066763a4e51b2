"""Face boxes, (x1, y1, x2, y2) in pixels: their area and their overlap.

Detection (a face found twice), the analyzers (largest face first) and tracking (linking faces from
frame to frame) all measure boxes. Kept apart from those modules so that tracking, a step every run
waits for, does not load the detectors' runtimes just to compare two boxes.
"""

from __future__ import annotations

import numpy as np


def box_area(box) -> float:
    return float(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]))


def box_iou(a, b) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def box_ious(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """box_iou of one box against each of boxes (n, 4), at once (the detectors' duplicate checks)."""
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-9)
