"""The source check (facepipe.faces.embedding.source_warnings): a source face smaller than the swapper
needs, or a greyscale source photo, is named in a one-line warning with the file and its size."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from facepipe.media import demo
from facepipe.models.alignment import template_points
from facepipe.faces.embedding import (
    MIN_PASTED_FACE,
    PASTED_TEMPLATE,
    embed_image,
    face_size,
    needed_face_size,
    source_warnings,
)
from facepipe.media.files import read_image
from facepipe.models import model_path


def keypoints(side: float, template: str = "arcface_128") -> np.ndarray:
    """Five keypoints whose aligned crop of ``template`` is ``side`` px, somewhere in a photo."""
    return template_points(template, side) + (40.0, 30.0)


def test_the_needed_size_is_the_swappers_input_or_the_offline_minimum():
    assert needed_face_size("insightface") == ("inswapper_128", 128, "arcface_128")
    assert needed_face_size("offline") == ("mesh_warp", MIN_PASTED_FACE, PASTED_TEMPLATE)
    assert needed_face_size("offline", "landmark_warp") == ("landmark_warp", MIN_PASTED_FACE, PASTED_TEMPLATE)
    assert needed_face_size("insightface", "hyperswap_1a_256") == ("hyperswap_1a_256", 256, "arcface_128")
    assert face_size(keypoints(200.0), "arcface_128") == pytest.approx(200.0)


def test_a_colour_photo_with_a_large_face_passes(astronaut):
    assert source_warnings("astronaut.png", astronaut, keypoints(160), "inswapper_128", 128, "arcface_128") == []


def test_a_small_face_is_named_with_its_file_and_size(astronaut):
    lines = source_warnings("faces/small one.png", astronaut, keypoints(112), "inswapper_128", 128, "arcface_128")
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "'faces/small one.png'" in lines[0] and "face is 112 px" in lines[0] and "128 px inswapper_128" in lines[0]
    assert "512x512 px photo" in lines[0]
    # A face as large as the swapper's input is enough.
    assert source_warnings("a.png", astronaut, keypoints(128.5), "inswapper_128", 128, "arcface_128") == []


def test_a_greyscale_photo_is_named_whether_one_channel_or_three_equal(astronaut, tmp_path):
    grey = cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY)
    one_channel = tmp_path / "grey 'photo'.png"
    cv2.imwrite(str(one_channel), grey)
    assert cv2.imread(str(one_channel), cv2.IMREAD_UNCHANGED).ndim == 2
    jpeg = tmp_path / "grey.jpg"  # three channels, a unit or two apart after JPEG
    cv2.imwrite(str(jpeg), cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    for path in (one_channel, jpeg):
        lines = source_warnings(path, read_image(path), keypoints(160), "mesh_warp", 128, PASTED_TEMPLATE)
        assert len(lines) == 1 and "greyscale" in lines[0] and repr(str(path)) in lines[0], lines
        assert "(512x512 px)" in lines[0]
    # A colour photo with grey parts (a white suit, a grey wall) is not greyscale.
    half_grey = astronaut.copy()
    half_grey[:, :400] = grey[:, :400, None]
    assert source_warnings("a.png", half_grey, keypoints(160), "mesh_warp", 128, PASTED_TEMPLATE) == []


@pytest.fixture(scope="module")
def offline_models(tmp_path_factory):
    from facepipe.models import face_mesh as mesh

    # The offline backend's detector and mesh, converted as rule convert_offline_models does.
    d = tmp_path_factory.mktemp("models")
    for name in (mesh.DETECTOR_FILE, mesh.MESH_FILE):
        mesh.convert(mesh.tflite_path(name), d / name)
    return d / mesh.DETECTOR_FILE, model_path("dlib_resnet_v1", "offline")


def test_embedding_a_small_greyscale_source_warns_on_every_run(offline_models, tmp_path, caplog):
    """Through embed_image (what rule embed_face runs): Tom Hanks' photo from insightface (a 112 px
    aligned crop), in greyscale, gets both warnings, and again when its embedding comes from the
    cache; a reference photo (swapper=None) and the colour astronaut (the demo's source) get none."""
    det, rec = offline_models
    hanks = cv2.imread(str(demo.insightface_image("Tom_Hanks_54745.png")))
    small = tmp_path / "small grey 'hanks'.png"
    # Room around the tight crop for the detector, as the tracking tests give it.
    cv2.imwrite(str(small), cv2.cvtColor(cv2.copyMakeBorder(hanks, 56, 56, 56, 56, cv2.BORDER_REPLICATE),
                                         cv2.COLOR_BGR2GRAY))
    kwargs = dict(providers=["cpu"], cache_dir=tmp_path / "cache", backend="offline")
    caplog.set_level(logging.WARNING, logger="facepipe.faces.embedding")
    for run in ("miss", "hit"):
        caplog.clear()
        embed_image(small, det, rec, tmp_path / f"{run}.npz", swapper="", **kwargs)
        lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(lines) == 2, (run, lines)
        assert all(repr(str(small)) in line for line in lines)
        assert "under the 128 px mesh_warp needs" in lines[0] and "greyscale" in lines[1] and "224x224 px" in lines[1]
        assert 100 <= int(lines[0].split("its face is ")[1].split(" px")[0]) <= 124  # about the crop's 112
    caplog.clear()
    embed_image(small, det, rec, tmp_path / "reference.npz", swapper=None, **kwargs)
    astronaut = demo.write_astronaut(tmp_path / "astronaut.png")
    embed_image(astronaut, det, rec, tmp_path / "astronaut.npz", swapper="", **kwargs)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_plan_says_it_on_the_console_too(offline_models, tmp_path):
    """facepipe.workflow.preflight.check_face_photos, which the main run calls while it plans and whose lines
    it prints: a small greyscale source gets both lines, a reference photo none."""
    from facepipe.workflow.preflight import check_face_photos

    det, rec = offline_models
    hanks = cv2.imread(str(demo.insightface_image("Tom_Hanks_54745.png")))
    small = tmp_path / "small grey.png"
    cv2.imwrite(str(small), cv2.cvtColor(cv2.copyMakeBorder(hanks, 56, 56, 56, 56, cv2.BORDER_REPLICATE),
                                         cv2.COLOR_BGR2GRAY))
    job = {"source": str(small), "reference": str(small), "map": "", "source_face": -1, "backend": "offline",
           "swapper": ""}
    lines = check_face_photos("job one", job, det, rec, cache_dir=tmp_path / "cache")
    assert len(lines) == 2 and all(line.startswith("job 'job one': source photo") for line in lines), lines
    assert "mesh_warp" in lines[0] and "greyscale" in lines[1]
