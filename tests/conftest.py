"""Session fixtures: the photos and clips many tests share, made once from installed packages."""

import pytest


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory):
    """Short clips and photos made once from images shipped in installed packages."""
    from facepipe.media import demo

    d = tmp_path_factory.mktemp("media")
    demo.make_clip(demo.insightface_image("t1.jpg"), d / "clip.mp4", seconds=2, fps=25, size=(320, 180))
    demo.make_clip(demo.insightface_image("t1.jpg"), d / "silent.mp4", seconds=1, fps=25, size=(320, 180),
                   audio=False)
    demo.write_astronaut(d / "astronaut.png")
    return d


# Real photos shipped inside installed packages, read once per session: insightface's group
# photo t1.jpg (six faces) and scikit-image's astronaut (one face), as BGR.
@pytest.fixture(scope="session")
def t1():
    import cv2

    from facepipe.media import demo

    return cv2.imread(str(demo.insightface_image("t1.jpg")))


@pytest.fixture(scope="session")
def astronaut():
    import cv2
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="session")
def mesh_analyzer(tmp_path_factory):
    """The offline backend's MediaPipe analyzer, its two models converted once per session as the
    rule converts them."""
    from facepipe.models import face_mesh as mesh
    from facepipe.models import model_path

    folder = tmp_path_factory.mktemp("offline_models")
    for name in (mesh.DETECTOR_FILE, mesh.MESH_FILE):
        mesh.convert(mesh.tflite_path(name), folder / name)
    return mesh.MeshAnalyzer(folder / mesh.DETECTOR_FILE, model_path("dlib_resnet_v1", "offline"))
