"""Face regions: BiSeNet face parsers trained on CelebAMask-HQ, as FaceFusion exports them."""

from __future__ import annotations

import cv2
import numpy as np

from facepipe.models.masker import AlignedMasker, finish_mask

# CelebAMask-HQ's 19 classes, in the order of the parser's output channels.
CLASSES = ("background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
           "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat")
# The regions a user may keep as face, by FaceFusion's names (its face_mask_region_set).
REGIONS = {"skin": 1, "left-eyebrow": 2, "right-eyebrow": 3, "left-eye": 4, "right-eye": 5, "glasses": 6,
           "nose": 10, "mouth": 11, "upper-lip": 12, "lower-lip": 13}
# FaceFusion's default: every region, i.e. the whole face without hair, ears, neck and background.
DEFAULT_REGIONS = tuple(REGIONS)
PARSER_CLASSES = len(CLASSES)


# The parser stand-in's layout on an arcface_128 crop: (CelebAMask-HQ class, ellipse centre x,
# y, semi-axes x, y), painted in this order. Eyes and mouth sit on the template's keypoints.
PARSER_LAYOUT = (
    (17, (0.50, 0.16, 0.40, 0.16)),  # hair
    (14, (0.50, 0.98, 0.16, 0.10)),  # neck
    (7, (0.14, 0.50, 0.04, 0.09)),  # l_ear
    (8, (0.86, 0.50, 0.04, 0.09)),  # r_ear
    (1, (0.50, 0.55, 0.34, 0.42)),  # skin
    (2, (0.36, 0.33, 0.09, 0.025)),  # l_brow (the image's left)
    (3, (0.64, 0.33, 0.09, 0.025)),  # r_brow
    (4, (0.3617, 0.4039, 0.07, 0.035)),  # l_eye
    (5, (0.6370, 0.4024, 0.07, 0.035)),  # r_eye
    (10, (0.50, 0.54, 0.06, 0.09)),  # nose
    (12, (0.50, 0.70, 0.115, 0.022)),  # u_lip
    (13, (0.50, 0.745, 0.115, 0.026)),  # l_lip
    (11, (0.50, 0.722, 0.09, 0.012)),  # mouth
)


def region_classes(regions) -> list[int]:
    """The class ids of FaceFusion region names; an unknown name is an error that lists them."""
    unknown = [r for r in regions if r not in REGIONS]
    if unknown:
        raise ValueError(f"unknown face region(s) {unknown}; expected any of {list(REGIONS)}")
    return sorted({REGIONS[r] for r in regions})


class FaceParser(AlignedMasker):
    """Which pixels of a face crop belong to which part of the face.

    In: BGR uint8 crops of target faces, aligned by the five keypoints (facepipe.models.alignment) to
    the swapper's template, arcface_128, any square side (each is scaled to the model's 512 px
    and the result back). The model takes NCHW RGB normalised by ImageNet's mean and std, and
    gives 19 class logits per pixel (CLASSES).

    Out (``masks``): one float32 mask per crop, the crop's height x width, in [0, 1]: 1 on the
    union of the ``regions`` kept as face (FaceFusion's names, REGIONS; swap there), 0 elsewhere
    (keep the target's pixels: hair, ears, neck, background, and any region left out, such as
    the mouth to keep the target's own). Finished as FaceFusion finishes it
    (facepipe.models.masker.finish_mask). ``labels`` gives the class map itself.
    """

    layout = "nchw"
    channels = "rgb"

    @staticmethod
    def standin_signature(spec):
        """FaceFusion's face_masker binds the input as "input" and reads the first output; BiSeNet
        takes NCHW with a free batch and gives the 19 classes' logits."""
        # lazy: the stand-in builder, with onnx, is slow to import, and only this path needs it
        from facepipe.models.standin import ModelSignature, TensorSig

        return ModelSignature((TensorSig("input", "float32", ("batch", 3, spec.size, spec.size)),),
                              (TensorSig("output", "float32", ("batch", PARSER_CLASSES, spec.size, spec.size)),))

    @staticmethod
    def build_standin(graph, spec) -> None:
        _parser_standin(graph, spec)

    def labels(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """Each crop's class map (uint8 CelebAMask-HQ ids, CLASSES), the crop's height x width."""
        return [cv2.resize(out.argmax(0).astype(np.uint8), (c.shape[1], c.shape[0]), interpolation=cv2.INTER_NEAREST)
                for out, c in zip(self._outputs(list(crops)), crops)]

    def masks(self, crops: list[np.ndarray], regions=DEFAULT_REGIONS) -> list[np.ndarray]:
        """The union mask of ``regions`` on each crop (see the class), a batch per model call."""
        classes = region_classes(regions)
        raw = [np.isin(out.argmax(0), classes).astype(np.float32) for out in self._outputs(list(crops))]
        return [finish_mask(r, (c.shape[1], c.shape[0])) for r, c in zip(raw, crops)]


def parser_label_map(side: int) -> np.ndarray:
    """The stand-in parser's classes on a ``side`` px arcface_128 crop (CelebAMask-HQ ids): a
    face ellipse of skin with brows, eyes, nose, lips and mouth where the template puts them,
    hair above, ears beside, neck below; background elsewhere. No glasses."""
    centre = (np.arange(side, dtype=np.float32) + 0.5) / side
    x, y = np.meshgrid(centre, centre)
    labels = np.zeros((side, side), np.uint8)
    for label, (cx, cy, ax, ay) in PARSER_LAYOUT:  # later parts are painted over earlier ones
        labels[((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0] = label
    return labels


def _parser_standin(g, spec) -> None:
    """Logits of a fixed face layout (parser_label_map), whatever the input: the layout is made
    at 1/8 of the model's size and scaled up (nearest), which keeps the file small."""
    coarse = parser_label_map(spec.size // 8)
    logits = (np.eye(PARSER_CLASSES, dtype=np.float32)[coarse] * 10.0).transpose(2, 0, 1)[None]
    full = g.op("Resize", [g.const(logits), "", g.const([1.0, 1.0, 8.0, 8.0])], mode="nearest")
    # + 0 * the input's mean: one layout per input image, for any batch.
    per_image = g.op("Mul", [g.op("ReduceMean", ["input"], axes=[1, 2, 3], keepdims=1), g.const(0.0)])
    g.op("Add", [full, per_image], "output")
