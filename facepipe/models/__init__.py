"""Face models: every analyzer and swap, the registry and the router.

- ``registry``: one entry per model file and per backend; ``zoo``: the router that loads the class
  of a model's family; ``backends``: a job's analyzer and swappers, from its backend;
- analyzers: ``face_analyzer`` (SCRFD + ArcFace), ``face_mesh`` (MediaPipe) with ``dlib_face``
  (dlib identity), ``alignment`` (the five-point templates);
- swappers: ``swapper`` (the aligned-crop base) with ``inswapper`` and ``hyperswap``; the offline
  swaps ``facepipe.models.classic`` (``classic_swap``) and ``facepipe.models.mesh_warp``
  (``mesh_swap``), and ``glasses`` (a frame found over the dense mesh: kept on a target, painted out
  of a source);
- masks and restorers: ``masker`` with ``occluder`` and ``face_parser``; ``face_restorer``;
- model files and sessions: ``download`` (pinned, verified), ``fp16``, ``batching``, ``standin``
  (stand-ins made from an entry), ``runtime`` (ONNX Runtime sessions).

Importing this package loads only the registry: a stage imports the classes it runs.
"""

from facepipe.models.registry import (  # noqa: F401
    BACKENDS,
    LEARNED,
    MODELS,
    OFFLINE_GROUP,
    PRECISIONS,
    ROLES,
    Backend,
    ModelSpec,
    backend,
    batched_path,
    crop_kind,
    crop_size,
    model_files,
    model_path,
    models_for,
    offered,
    package_file,
    spec,
    swapper_for,
    works_on_pixels,
)
