"""Session fixtures: the photos and clips many tests share, made once from installed packages."""

import inspect

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
def grace_hopper():
    """matplotlib's sample portrait (a runtime requirement): an old face, its creases, and glasses."""
    import cv2
    from matplotlib import cbook

    return cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))


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


# What makes a test a workflow test: it runs Snakemake, itself or through a fixture it uses.
_RUNS_WORKFLOW = ("snakemake(", '"snakemake"', "run_workflow(", "copy_workflow(")


def _runs_workflow(func) -> bool:
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        return False
    return any(call in source for call in _RUNS_WORKFLOW)


def pytest_collection_modifyitems(config, items):
    """Mark every test that runs the workflow `workflow`, so that CI's fast tier
    (`pytest -m "not workflow"`) runs the unit tests first; a test marked by hand stays marked."""
    for item in items:
        if item.get_closest_marker("workflow") or not hasattr(item, "_fixtureinfo"):
            continue
        funcs = [item.function] + [d.func for defs in item._fixtureinfo.name2fixturedefs.values() for d in defs]
        if any(_runs_workflow(f) for f in funcs):
            item.add_marker(pytest.mark.workflow)
