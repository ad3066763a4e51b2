"""Face models: the registry (facepipe.models.registry), one class per model family
(inswapper, hyperswap, face restorers), and the router that loads a model by its registry
entry (facepipe.models.zoo).

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
    model_path,
    models_for,
    offered,
    package_file,
    spec,
    swapper_for,
)
