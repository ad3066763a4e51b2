"""dlib's identity ResNet rebuilt on ONNX Runtime (facepipe.models.dlib_resnet): the same descriptors
as dlib's own, from the converted file and from the model file itself, and a file that does not
fit the architecture is refused."""

import logging

import numpy as np
import pytest

from facepipe.media.integrity import seal_path
from facepipe.models.download import verify_before_use
from facepipe.models import dlib_resnet, model_path
from facepipe.models.dlib_face import import_dlib
from facepipe.models.registry import converter, spec


@pytest.fixture(scope="module")
def dlib():
    return import_dlib()


@pytest.fixture(scope="module")
def dat():
    return model_path("dlib_resnet_v1", "offline")


@pytest.fixture(scope="module")
def astronaut_faces(dlib, dat):
    """The astronaut photo (RGB) and dlib's 68-point shapes of its faces (dlib's own detector and
    predictor, so the check does not depend on the mesh)."""
    from skimage import data

    img = data.astronaut()
    predictor = dlib.shape_predictor(str(dat.with_name("shape_predictor_68_face_landmarks.dat")))
    shapes = dlib.full_object_detections()
    for rect in dlib.get_frontal_face_detector()(img, 1):
        shapes.append(predictor(img, rect))
    assert len(shapes) >= 1
    return img, shapes


def dlib_descriptors(dlib, dat, img, shapes) -> np.ndarray:
    reference = dlib.face_recognition_model_v1(str(dat))
    return np.array([np.asarray(d, np.float32) for d in reference.compute_face_descriptor(img, shapes, 0)])


def test_the_converted_model_gives_dlibs_descriptors(tmp_path, dlib, dat, astronaut_faces):
    """rule convert_offline_models' converter for the offline backend's recognizer: a sealed ONNX file
    whose descriptors of real faces equal dlib's own within 1e-5 (measured: 3e-7)."""
    assert spec("dlib_resnet_v1_onnx").converter == "facepipe.models.dlib_resnet:convert"
    out = tmp_path / "offline" / "dlib_face_recognition_resnet_model_v1.onnx"
    figures = converter("dlib_resnet_v1_onnx")(dat, out)
    assert figures["max_abs_diff_vs_dlib"] < dlib_resnet.CHECK_TOLERANCE
    assert seal_path(out).is_file()
    verify_before_use(out)  # sealed, and the seal holds
    img, shapes = astronaut_faces
    got = dlib_resnet.DlibResNet(out, dlib).descriptors(img, shapes)
    want = dlib_descriptors(dlib, dat, img, shapes)
    assert got.shape == want.shape == (len(shapes), 128)
    assert np.abs(got - want).max() < 1e-5


def test_the_model_file_itself_is_rebuilt_in_memory(dlib, dat, astronaut_faces):
    """Given dlib's .dat (as tools and tests pass it), the network is rebuilt in memory and checked,
    not run by dlib."""
    img, shapes = astronaut_faces
    resnet = dlib_resnet.DlibResNet(dat, dlib)
    assert resnet.session is not None
    assert np.abs(resnet.descriptors(img, shapes) - dlib_descriptors(dlib, dat, img, shapes)).max() < 1e-5
    assert resnet.descriptors(img, dlib.full_object_detections()).shape == (0, 128)


def test_a_file_that_does_not_fit_the_architecture_is_refused(tmp_path, dlib, dat, caplog):
    """A parameter tensor missing (another network in a file of the same name) is a ModelLayoutError
    naming what was expected; convert leaves nothing behind; the analyzer's recognizer falls back to
    dlib's own descriptor with a warning."""
    tensors = dlib_resnet.read_tensors(dat.read_bytes())
    assert len(tensors) == 59  # 29 convolutions, 29 affine layers, one fully connected layer
    with pytest.raises(dlib_resnet.ModelLayoutError, match="affine layer of 32 channels"):
        dlib_resnet.build_onnx(tensors[:1] + tensors[2:])
    with pytest.raises(dlib_resnet.ModelLayoutError, match="more parameter tensors"):
        dlib_resnet.build_onnx(tensors + tensors[-1:])

    data = bytearray(dat.read_bytes())
    first = data.index(np.float32(tensors[0][0]).tobytes())
    del data[first - 12:first + 4 * tensors[0].size]  # the first convolution, header and values
    broken = tmp_path / "dlib_face_recognition_resnet_model_v1.dat"
    broken.write_bytes(bytes(data))
    out = tmp_path / "out.onnx"
    with pytest.raises(dlib_resnet.ModelLayoutError):
        dlib_resnet.convert(broken, out)
    assert not out.exists() and not list(tmp_path.glob("out.onnx*"))

    class StandInDlib:  # dlib itself could not load the broken file; its descriptor is what matters here
        face_recognition_model_v1 = staticmethod(lambda path: dlib.face_recognition_model_v1(str(dat)))

    with caplog.at_level(logging.WARNING, logger="facepipe.models.dlib_resnet"):
        resnet = dlib_resnet.DlibResNet(broken, StandInDlib)
    assert resnet.session is None
    assert "dlib's own, slower descriptor is used" in caplog.text
