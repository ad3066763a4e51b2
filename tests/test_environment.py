"""The install: one ONNX Runtime, headless OpenCV, and a conda env that mirrors requirements.txt."""

import importlib.metadata as md
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _requirements() -> set[str]:
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return {re.sub(r"^\./", "../", ln.strip()).replace("-e .", "-e ..")
            for ln in lines if ln.strip() and not ln.lstrip().startswith("#")}


def test_conda_env_mirrors_requirements():
    env = yaml.safe_load((REPO / "envs" / "facepipe.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert set(pip) == _requirements()


def test_only_the_headless_opencv_ships_cv2():
    shipping = []
    for dist in ("opencv-python", "opencv-python-headless", "opencv-contrib-python"):
        try:
            files = md.distribution(dist).files or []
        except md.PackageNotFoundError:
            continue
        if any(str(f).startswith("cv2/") for f in files):
            shipping.append(dist)
    assert shipping == ["opencv-python-headless"]
