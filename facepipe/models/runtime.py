"""ONNX Runtime sessions that say which device they really run on.

ONNX Runtime quietly falls back to the CPU when a GPU provider cannot load
(missing CUDA/TensorRT libraries, wrong wheel, no GPU). On a cluster that
turns a 10-minute job into a 10-hour one without any error, so every fallback
here is logged as a WARNING together with the most likely cause.
"""

from __future__ import annotations

import functools
import importlib.metadata as metadata
import logging
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime

from facepipe.gpu import nvidia_gpu_missing
from facepipe.models.download import verify_before_use

log = logging.getLogger(__name__)

PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
_CPU = PROVIDER_NAMES["cpu"]
_GPU_PROVIDERS = {PROVIDER_NAMES["tensorrt"], PROVIDER_NAMES["cuda"]}

# Distributions that all install the same top-level `onnxruntime/` package;
# two of them installed at once overwrite each other's files.
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino")

STANDIN_METADATA_KEY = "facepipe_standin"


def installed_onnxruntime_distributions() -> list[str]:
    """Installed ONNX Runtime distributions that actually ship `onnxruntime/` files.

    Metadata-only distributions (this project's `onnxruntime` shim, which only
    exists to satisfy insightface's dependency by name) do not count: they
    cannot shadow the real package.
    """
    found = []
    for name in ORT_DISTRIBUTIONS:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        files = dist.files or []
        if any(str(f).replace("\\", "/").startswith("onnxruntime/") for f in files):
            found.append(name)
    return found


def _wheel_hint() -> str:
    """Why GPU providers may be missing, judged from what is installed."""
    dists = installed_onnxruntime_distributions()
    if "onnxruntime-gpu" not in dists and "onnxruntime" in dists:
        return (
            " Hint: the CPU-only 'onnxruntime' wheel provides the onnxruntime package; "
            "uninstall it and install 'onnxruntime-gpu' (see requirements.txt)."
        )
    if len(dists) > 1:
        return (
            f" Hint: several ONNX Runtime distributions ship the onnxruntime package ({', '.join(dists)}); "
            "they overwrite each other. Uninstall all of them and reinstall only 'onnxruntime-gpu'."
        )
    return ""


def _full_name(provider: str) -> str:
    return PROVIDER_NAMES.get(provider.lower(), provider)


def cpu_only(providers: list[str]) -> bool:
    """Whether a provider list (short or full names, as the options accept them) asks for the CPU alone."""
    return all(_full_name(p) == _CPU for p in providers)


@functools.lru_cache(maxsize=8)
def gpu_tag(device_id: int) -> str:
    """A folder-safe GPU model name, because TensorRT engines only fit the GPU
    model they were built on. Falls back to "gpu<N>" when it cannot be read."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, f"--id={device_id}", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout.strip()
            if out:
                return re.sub(r"[^A-Za-z0-9._-]+", "_", out.splitlines()[0]).strip("_")
        except (OSError, subprocess.SubprocessError):
            pass
    return f"gpu{device_id}"


def _provider_options(
    name: str, model_path: Path, *, precision: str, trt_cache_dir: Path, device_id: int
) -> dict[str, str]:
    # The device is named only when it is not the first: from 1.26 on, ONNX Runtime looks a named
    # device up among plugin EPs first and logs a warning for every session when it finds none (the
    # built-in CUDA and TensorRT providers are not plugins), seen in every GPU job's log on an H200.
    # Device 0 is their default.
    device = {"device_id": str(device_id)} if device_id else {}
    if name == PROVIDER_NAMES["tensorrt"]:
        # Engines depend on model, ORT/TensorRT version and GPU model; keying
        # the cache folder on all three means a stale engine is never reused.
        cache = Path(trt_cache_dir) / model_path.stem / onnxruntime.__version__ / gpu_tag(device_id)
        cache.mkdir(parents=True, exist_ok=True)
        return {
            **device,
            "trt_fp16_enable": "True" if precision == "fp16" else "False",
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": str(cache),
        }
    if name == PROVIDER_NAMES["cuda"]:
        # Exhaustive cuDNN search re-runs for every new input shape; the
        # detector sees many, so the heuristic is the faster choice overall.
        return {
            **device,
            "cudnn_conv_algo_search": "HEURISTIC",
            "arena_extend_strategy": "kSameAsRequested",
            "do_copy_in_default_stream": "1",
        }
    return {}


def is_standin(model_path: str | Path) -> bool:
    """True when the ONNX file is one of facepipe's stand-ins (see facepipe.models.standin)."""
    # lazy: onnx is slow to import, and only this path needs it
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return any(p.key == STANDIN_METADATA_KEY and p.value == "true" for p in model.metadata_props)


def create_session(
    model_path: str | Path,
    providers: list[str],
    *,
    precision: str = "fp32",
    threads: int = 0,
    trt_cache_dir: str | Path = "resources/trt_engines",
    device_id: int = 0,
    log: logging.Logger = log,
) -> onnxruntime.InferenceSession:
    """An InferenceSession on the first usable provider of ``providers``.

    ``providers`` are short names ("tensorrt", "cuda", "cpu") or full ONNX
    Runtime names, in order of preference. The CPU provider is always appended
    last so a session can always be created; every step down is a WARNING.
    """
    model_path = Path(model_path)

    verify_before_use(model_path, log=log)
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"precision must be 'fp32' or 'fp16', not {precision!r}")
    requested = list(dict.fromkeys(_full_name(p) for p in providers))
    if not requested:
        requested = [_CPU]
    available = set(onnxruntime.get_available_providers())

    usable = []
    for name in requested:
        if name in available:
            usable.append(name)
        else:
            hint = _wheel_hint() if name in _GPU_PROVIDERS else ""
            log.warning(
                "%s is not available in this ONNX Runtime build (onnxruntime %s offers %s); skipping it.%s",
                name, onnxruntime.__version__, sorted(available), hint,
            )
    # Without an NVIDIA GPU ONNX Runtime cannot load its CUDA or TensorRT provider: asked for them,
    # it prints its own load errors in red for every session of every job before falling back to
    # the CPU, which reads as a failure on any machine without a GPU. Not asked, the CPU is used at
    # once and the one warning below says why.
    gpu_missing = nvidia_gpu_missing(device_id) if any(name in _GPU_PROVIDERS for name in usable) else None
    if gpu_missing:
        usable = [name for name in usable if name not in _GPU_PROVIDERS]
    if _CPU not in usable:
        usable.append(_CPU)

    options = onnxruntime.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads

    session = None
    candidates = usable
    while candidates:
        provider_options = [
            _provider_options(
                name, model_path, precision=precision, trt_cache_dir=Path(trt_cache_dir), device_id=device_id
            )
            for name in candidates
        ]
        try:
            session = onnxruntime.InferenceSession(
                str(model_path), sess_options=options, providers=candidates, provider_options=provider_options
            )
            break
        except Exception as exc:  # ORT raises plain RuntimeError/Fail subclasses
            if candidates[0] == _CPU:
                raise
            log.warning(
                "creating a session for %s with %s failed (%s); falling back to %s",
                model_path, candidates[0], exc, candidates[1:],
            )
            candidates = candidates[1:]
    assert session is not None

    actual = session.get_providers()[0]
    log.info("%s runs on %s (requested %s)", model_path, actual, requested)
    if actual != requested[0]:
        if gpu_missing and requested[0] in _GPU_PROVIDERS:
            why = gpu_missing
        else:
            hint = _wheel_hint() if requested[0] in _GPU_PROVIDERS else ""
            why = ("that provider could not be loaded (missing CUDA/cuDNN/TensorRT libraries or no GPU; "
                   f"ONNX Runtime's own error is printed above).{hint}")
        log.warning("%s runs on %s, not on the requested %s: %s", model_path, actual, requested[0], why)

    meta = session.get_modelmeta().custom_metadata_map
    if meta.get(STANDIN_METADATA_KEY) == "true":
        log.warning(
            "STAND-IN model %s: not a real face swap (stands in for %s)",
            model_path, meta.get("real_model", "?"),
        )
    return session


def runs_on_gpu(session: onnxruntime.InferenceSession) -> bool:
    return session.get_providers()[0] in _GPU_PROVIDERS


class BoundRunner:
    """Runs a session through ONNX Runtime's IO binding, keeping what does not change between
    calls on the session's device.

    Inputs that stay the same for a whole job (the swapper's source latent) are copied to the
    device once, and the outputs go to buffers allocated there once; per call only the
    changing inputs travel to the device and the outputs back. On a CPU session this is the
    same as session.run (tests use it there to check the binding gives identical results).
    """

    def __init__(self, session: onnxruntime.InferenceSession, device_id: int = 0):
        self.session = session
        self.device = "cuda" if runs_on_gpu(session) else "cpu"
        self.device_id = device_id if self.device == "cuda" else 0
        self.binding = session.io_binding()
        self._constants: dict[str, tuple[bytes, object]] = {}
        self.output_names = [o.name for o in session.get_outputs()]
        self._dynamic_outputs = any(not isinstance(d, int) for o in session.get_outputs() for d in o.shape)
        self._input_shapes: dict[str, tuple] = {}
        self._outputs_bound = False

    def _bind_outputs(self) -> None:
        for out in self.session.get_outputs():
            shape = out.shape
            if all(isinstance(d, int) for d in shape):
                value = onnxruntime.OrtValue.ortvalue_from_shape_and_type(
                    shape, np.float32 if out.type == "tensor(float)" else np.float16, self.device, self.device_id)
                self.binding.bind_ortvalue_output(out.name, value)
            else:  # dynamic shape: ORT allocates it on the device at each run
                self.binding.bind_output(out.name, self.device, self.device_id)
        self._outputs_bound = True

    def set_constant(self, name: str, value: np.ndarray) -> None:
        """Bind an input that stays the same until set again (copied to the device once)."""
        value = np.ascontiguousarray(value)
        key = value.tobytes()
        if self._constants.get(name, (None,))[0] == key:
            return
        ort_value = onnxruntime.OrtValue.ortvalue_from_numpy(value, self.device, self.device_id)
        self.binding.bind_ortvalue_input(name, ort_value)
        self._constants[name] = (key, ort_value)  # keeps the device copy alive

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        shapes = {name: np.shape(value) for name, value in inputs.items()}
        if self._outputs_bound and self._dynamic_outputs and shapes != self._input_shapes:
            # A batch of another size: the outputs ORT allocated at the last run (and reuses
            # while the shapes stay the same) would not fit.
            self.binding.clear_binding_outputs()
            self._outputs_bound = False
        self._input_shapes = shapes
        if not self._outputs_bound:
            self._bind_outputs()
        for name, value in inputs.items():
            self.binding.bind_cpu_input(name, np.ascontiguousarray(value))
        self.session.run_with_iobinding(self.binding)
        return self.binding.copy_outputs_to_cpu()


def normalized(pixels: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(pixels / 255 - mean) / std in float32, a model's input from uint8 crops: the same values,
    in place on one copy, and without the steps a mean of 0 or a std of 1 leaves as they are."""
    blob = pixels.astype(np.float32)
    blob /= np.float32(255.0)
    if mean.any():
        blob -= mean
    if (std != 1).any():
        blob /= std
    return blob


class BatchedSession:
    """A session fed up to ``batch_size`` items per call: the swapper's and enhancer's faces.

    A model whose batch is fixed (the published swappers and restorers) takes its fixed
    size whatever ``batch_size`` says; a batched copy (facepipe.models.batching) takes ``batch_size``.
    On TensorRT every batch is padded to the full size, so one engine serves the whole job. On
    a GPU the calls go through IO binding (BoundRunner); ``io_binding`` forces it on or off.
    """

    def __init__(self, session: onnxruntime.InferenceSession, batch_size: int, *, name: str = "",
                 io_binding: bool | None = None):
        shape = session.get_inputs()[0].shape
        fixed = shape[0] if shape and isinstance(shape[0], int) and shape[0] > 0 else None
        self.session = session
        self.size = fixed or max(1, int(batch_size))
        self.pad = session.get_providers()[0] == PROVIDER_NAMES["tensorrt"]
        if io_binding is None:
            io_binding = runs_on_gpu(session)
        self.bound = BoundRunner(session) if io_binding else None
        log.info("%s: %d face(s) per call%s", name, self.size,
                 f" (its batch is fixed at {fixed})" if fixed and fixed != batch_size else "")

    def batches(self, items: list) -> Iterator[tuple[list, list]]:
        """Consecutive chunks of ``items``, each with the list a call gets (padded on TensorRT)."""
        for start in range(0, len(items), self.size):
            chunk = items[start:start + self.size]
            yield chunk, chunk + chunk[-1:] * (self.size - len(chunk)) if self.pad else chunk

    def run(self, inputs: dict[str, np.ndarray], constants: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
        """One call. ``constants`` stay the same from call to call: with IO binding they are
        copied to the device once."""
        constants = constants or {}
        if self.bound is None:
            return self.session.run(None, {**inputs, **constants})
        for name, value in constants.items():
            self.bound.set_constant(name, value)
        return self.bound.run(inputs)
