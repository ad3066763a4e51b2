"""Face swapping per segment: the tracked faces of the chosen persons, from the crops detection
kept, through the job's swapper (facepipe.models)."""

from __future__ import annotations

import logging
import multiprocessing
from collections import namedtuple
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

import cv2
import numpy as np

from facepipe.faces import roles
from facepipe.faces.detection import OutsideCrop, swap_input
from facepipe.faces.embedding import load_source
from facepipe.faces.selection import SOURCE, choose, parse_map
from facepipe.media.integrity import read_sealed_json, reject
from facepipe.media.patches import Patch, write_patches
from facepipe.media.tables import iter_frame_tuples, read_rows
from facepipe.media.tone import patch_in_target_tone
from facepipe.media.video import load_plan
from facepipe.models import crop_kind, works_on_pixels
from facepipe.models.backends import METRICS, make_swappers
from facepipe.models.face_parser import DEFAULT_REGIONS
from facepipe.parallel import in_order
from facepipe.progress import Progress
from facepipe.swap.masks import as_patch_mask, mesh_region_keep
from facepipe.swap.occlusion import TrackAppearance, keep_occluded, sample_frames

log = logging.getLogger(__name__)

# What the swap reads of the faces table (swap_input's row, and the face it names).
SWAP_COLUMNS = ["frame", "face", "kps", "landmarks", "crop", "crop_x", "crop_y", "crop_matrix"]


# What the swap reads of a tracked face (a row of the tracks table with its source): a plain,
# picklable tuple, so that batches can go to worker processes.
TrackedFace = namedtuple("TrackedFace", "seg_frame face filled track person source kps landmarks")


def track_appearances(faces: str | Path, tracks: list[TrackedFace], crop_kind: str,
                      frame_size: tuple[int, int] | None = None) -> dict:
    """Each swapped track's appearance (facepipe.swap.occlusion) from samples spread along it in this
    segment; tracks without a dense mesh (468 points) have none. One extra read of the faces
    table, decoding only the sampled crops."""

    appearances, wanted = {}, {}
    by_track: dict[int, list[TrackedFace]] = {}
    for tracked in tracks:
        by_track.setdefault(tracked.track, []).append(tracked)
    for track, rows in sorted(by_track.items()):
        meshes = [np.asarray(row.landmarks, np.float32).reshape(-1, 2) for row in rows if row.landmarks is not None]
        if len(meshes) != len(rows) or not meshes or meshes[0].shape[0] != 468:
            continue
        appearances[track] = TrackAppearance(meshes)
        by_frame = {int(row.seg_frame): row for row in rows}
        for frame in sample_frames(list(by_frame)):
            wanted[(frame, int(by_frame[frame].face))] = by_frame[frame]
    if not wanted:
        return appearances
    for table in iter_frame_tuples(faces, SWAP_COLUMNS):
        for row in table:
            tracked = wanted.get((int(row.frame), int(row.face)))
            if tracked is None:
                continue
            try:
                crop, args = swap_input(row, tracked.kps, tracked.landmarks, crop_kind, frame_size)
            except (OutsideCrop, ValueError, TypeError):
                continue  # the swap itself names a face it cannot use
            mesh = np.asarray(args["landmarks"], np.float32).reshape(-1, 2) - (args["x"], args["y"])
            appearances[tracked.track].add_sample(crop, mesh)
    return {track: app for track, app in appearances.items() if app.samples}


# The batch function of the swap in progress, for worker processes: they are forked once it is set
# and run it on the batches they are sent (swap_segment's workers).
_batch_swap = None


def _swap_batch(items: list[tuple]):
    return _batch_swap(items)


def _in_order(fn, batches, workers: int):
    """(batch, fn(batch)) for each batch, in order; over ``workers`` forked processes when more than
    one (a few batches per worker in flight, so memory stays bounded)."""
    global _batch_swap
    if workers <= 1:
        for batch in batches:
            yield batch, fn(batch)
        return
    _batch_swap = fn
    # OpenCV's thread pool does not survive a fork (a forked worker that touches it waits for
    # threads it does not have): the workers inherit one thread, and the processes are the
    # parallelism.
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            yield from in_order(pool, _swap_batch, batches, 2 * workers)
    finally:
        _batch_swap = None
        cv2.setNumThreads(threads)


def tracked_faces(rows) -> list[TrackedFace]:
    """TrackedFace of each row (namedtuples with the tracks table's fields and ``source``, or a
    DataFrame of them), in their order."""
    if hasattr(rows, "itertuples"):
        rows = rows.itertuples(index=False)
    return [TrackedFace(*(getattr(row, field, None) for field in TrackedFace._fields)) for row in rows]


def swap_segment(faces: str | Path, tracks, swappers: dict, out: str | Path, *, crop_kind: str,
                 what: str = "swap_faces", occlusion: bool = False, masks=None, regions=None,
                 workers: int = 1, frame_size: tuple[int, int] | None = None) -> int:
    """Swap a segment's tracked faces from the crops detection kept (no frame is decoded); writes
    the face patches, in the tracks' order within each frame.

    tracks: the segment's rows of the job's tracks table (facepipe.faces.tracking) that are swapped
    (tracked_faces: rows or a DataFrame), with a ``source`` field naming each one's entry in
    ``swappers`` (key -> (swapper, its prepared source), facepipe.models.backends.make_swappers);
    crop_kind: the crop detection kept. Each face is re-aligned to its tracked keypoints
    (facepipe.faces.detection.swap_input); an interpolated face uses the crop detection held for its
    frame. The faces table is verified before its first row is used
    (facepipe.media.tables.iter_frame_tuples). occlusion: whatever covers a tracked face keeps the
    target's pixels (facepipe.swap.occlusion; swaps of pixels over a dense mesh).
    masks: the job's masks on aligned crops (facepipe.swap.masks.AlignedCropMasks; learned swappers):
    each patch carries its paste mask, which the render and the enhancer paste through.
    regions: the face regions swapped (face_mask region on the offline swaps, from the mesh);
    the rest of the face keeps the target's pixels.
    workers: processes the batches are swapped in (forked with the swappers; the same patches, in
    the same order, as one process makes).
    frame_size: the working frames' (width, height): a face partly out of the frame keeps its
    landmarks past the edge (facepipe.models.face_mesh), which its crop cannot hold.
    """

    tracks = tracked_faces(tracks)
    ordered = sorted(tracks, key=lambda row: (row.seg_frame, row.person, row.track))
    wanted = {frame: list(rows) for frame, rows in groupby(ordered, key=lambda row: row.seg_frame)}
    progress = Progress(len(wanted), f"{what} (frames with faces to swap)", log)
    counts = {"frames": 0, "faces": 0, "filled": 0, "outside": 0, "occluded": 0}
    appearances = track_appearances(faces, tracks, crop_kind, frame_size) if occlusion else {}
    if occlusion:
        log.info("occlusion: the appearance of %d of %d tracks read from the faces themselves", len(appearances),
                 len({tracked.track for tracked in tracks}))

    def inputs(table) -> list[tuple]:
        """(tracked row, crop, swapper arguments) of the wanted faces of a piece of the table."""
        by_face = {(int(r.frame), int(r.face)): r for r in table}
        out = []
        for frame in sorted({int(r.frame) for r in table}):
            for tracked in wanted.get(frame, []):
                row = by_face.get((frame, int(tracked.face)))
                if row is None:
                    reject(faces, f"the tracks name face {tracked.face} of frame {frame}, which it does not hold "
                                  f"(made by another detection run)")
                try:
                    try:
                        crop, args = swap_input(row, tracked.kps, tracked.landmarks, crop_kind, frame_size)
                    except OutsideCrop:
                        if tracked.filled:
                            counts["outside"] += 1
                            continue  # interpolated: the face moved further than its held crop reaches
                        # Smoothing moved the face further than the crop's margin (a fast, jerky
                        # move): this frame uses the detected keypoints, which fit by construction.
                        crop, args = swap_input(row, row.kps, row.landmarks, crop_kind, frame_size)
                        counts["outside"] += 1
                except (ValueError, TypeError) as exc:
                    # The table passed its seal, so it was written like this: removed all the same,
                    # so that the next run detects again, and named, never swapped as garbage.
                    reject(faces, f"face {row.face} of frame {row.frame} is not usable: {exc}")
                out.append((tracked, crop, args))
        return out

    def swapped(items: list[tuple]) -> tuple[list[Patch | None], int]:
        """The patches of a batch of (tracked face, crop, swapper arguments), and how many of its faces
        are partly covered (kept in front)."""
        patches: list[Patch | None] = [None] * len(items)
        occluded = 0
        for key in dict.fromkeys(tracked.source for tracked, _, _ in items):
            swapper, source = swappers[key]
            index = [i for i, (tracked, _, _) in enumerate(items) if tracked.source == key]
            made = swapper.swap([items[i][1] for i in index], [items[i][2] for i in index], source)
            for i, patch in zip(index, made):
                patches[i] = patch
        aligned = [i for i, patch in enumerate(patches) if patch is not None and patch.kind != "pixels"]
        if masks is not None and aligned:
            # The masks see the target's own crop, the one the swapper took (same alignment).
            for i, mask in zip(aligned, masks.masks([items[i][1] for i in aligned])):
                patches[i].mask = as_patch_mask(mask)
        for patch, (tracked, crop, args) in zip(patches, items):
            if patch is not None:
                patch_in_target_tone(patch, crop, args.get("x", 0), args.get("y", 0))
            appearance = appearances.get(tracked.track)
            if patch is not None and patch.kind == "pixels" and (appearance or regions) is not None:
                mesh = np.asarray(args["landmarks"], np.float32).reshape(-1, 2) - (args["x"], args["y"])
                kept = np.zeros(crop.shape[:2], np.float32)
                if appearance is not None:
                    kept = appearance.mask(crop, mesh)
                    occluded += int(kept.any())
                if regions is not None and mesh.shape[0] == 468:
                    kept = np.maximum(kept, mesh_region_keep(mesh, crop.shape[:2], regions))
                if kept.any():
                    # The patch's mask (informational on pixels) shows what was kept, for the
                    # preview's and QC's mask view.
                    patch.mask = as_patch_mask(1.0 - keep_occluded(patch, crop, args["x"], args["y"], kept))
            # A swapper may make no patch for a face (the classic one, for a face too small to swap).
            if patch is not None:
                patch.frame, patch.face = int(tracked.seg_frame), int(tracked.face)
                patch.kps = np.asarray(tracked.kps, dtype=np.float32).reshape(5, 2)
        return patches, occluded

    def batches():
        # A row group of whole frames at a time; the faces of consecutive frames go through the
        # swapper together, a batch at a time.
        step = max(swapper.batch_size for swapper, _ in swappers.values()) if swappers else 1
        pending: list[tuple] = []
        for table in iter_frame_tuples(faces, SWAP_COLUMNS):
            for item in inputs(table):
                if pending and pending[-1][0].seg_frame != item[0].seg_frame and len(pending) >= step:
                    yield pending
                    pending = []
                pending.append(item)
        if pending:
            yield pending

    def frames_of_patches():
        for items, (patches, occluded) in _in_order(swapped, batches(), workers):
            counts["occluded"] += occluded
            yield from by_frame(items, patches)

    def by_frame(items: list[tuple], patches: list[Patch | None]):
        done = 0
        for _, group in groupby(items, key=lambda item: item[0].seg_frame):
            group = list(group)
            frame_patches = [p for p in patches[done:done + len(group)] if p is not None]
            done += len(group)
            counts["frames"] += 1
            progress.update()
            counts["faces"] += len(frame_patches)
            counts["filled"] += sum(bool(item[0].filled) for item in group)
            yield frame_patches

    count = write_patches(frames_of_patches(), out)
    progress.close()
    log.info("swapped %d faces in %d frames (%d of them interpolated over a detector miss); %d tracked faces "
             "reached outside their crop (interpolated: skipped; detected: swapped at the detected keypoints); "
             "%d partly covered (kept in front)", counts["faces"], counts["frames"], counts["filled"],
             counts["outside"], counts["occluded"])
    return count


@dataclass(frozen=True)
class SwapModel:
    """What swaps: the job's backend, its swapper (registry key) and that model's file (None for the
    offline swaps), pixel boost, and the offline mesh swap's shape transfer."""

    backend: str
    swapper: str
    model: str | Path | None
    pixel_boost: int = 0
    shape_transfer: int | None = None


@dataclass(frozen=True)
class Compute:
    """Where and how the models run: ONNX Runtime providers, precision, threads, faces per call."""

    providers: list[str]
    precision: str
    threads: int
    batch_size: int


@dataclass(frozen=True)
class Selection:
    """Which persons are swapped (facepipe.faces.selection): the job's faces mode, its map, and the
    reference threshold."""

    mode: str
    map_option: str
    threshold: float


@dataclass(frozen=True)
class MaskOptions:
    """The job's masks (facepipe.swap.masks), with the occluder's and parser's model files where
    those masks need them."""

    face_mask: tuple = ()
    blur: float = 0.3
    padding: tuple = (0, 0, 0, 0)
    regions: tuple = ()
    occluder: str | Path | None = None
    parser: str | Path | None = None


def swap_job_segment(faces: str | Path, tracks: str | Path, persons: str | Path, segment: str, out: str | Path, *,
                     embeddings: dict[str, str], model: SwapModel, compute: Compute, selection: Selection,
                     masks: MaskOptions = MaskOptions(), plan: str | Path | None = None) -> int:
    """The swap stage of one segment: which persons get which source (facepipe.faces.selection, decided
    for the whole job from its persons), then swap_segment on this segment's tracked faces.

    embeddings: the job's embedding records by role (facepipe.faces.roles).
    plan: the segment's plan (facepipe.media.video.load_plan), for the frames' size."""

    metric = METRICS[model.backend]
    records = {role: load_source(path) for role, path in embeddings.items()}
    entries = parse_map(selection.map_option)
    sources = {SOURCE: records[roles.SOURCE]} if roles.SOURCE in records else {}
    references = {}
    for i, entry in enumerate(entries):
        sources[entry.key] = records[roles.map_source(i)]
        if entry.reference is not None:
            references[entry.key] = records[roles.map_reference(i)]["embedding"]
    cast = read_sealed_json(persons)["persons"]
    reference = records[roles.REFERENCE]["embedding"] if roles.REFERENCE in records else None
    chosen = choose(cast, mode=selection.mode, metric=metric, threshold=selection.threshold, reference=reference,
                    entries=entries, references=references)
    log.info("persons swapped: %s", ", ".join(f"{p} ({k})" for p, k in sorted(chosen.items())) or "none")
    rows = [TrackedFace(row.seg_frame, row.face, row.filled, row.track, row.person, chosen[row.person], row.kps,
                        row.landmarks)
            for row in read_rows(tracks, ["seg_frame", "face", "filled", "track", "person", "kps", "landmarks"],
                                 where=("segment", segment))
            if row.person in chosen]
    used = {key: sources[key] for key in dict.fromkeys(row.source for row in rows)}
    swappers = make_swappers(model.swapper, model.model, used, compute.providers, precision=compute.precision,
                             threads=compute.threads, batch_size=compute.batch_size, pixel_boost=model.pixel_boost,
                             shape_transfer=model.shape_transfer, source_file=", ".join(embeddings.values()))
    kind = crop_kind(model.swapper, model.pixel_boost)
    on_pixels = works_on_pixels(model.swapper)  # the offline swaps
    regions = tuple(masks.regions or DEFAULT_REGIONS)
    crop_masks = None
    if not on_pixels and masks.face_mask:
        # lazy: imported only on the path that needs it
        # lazy: imported only on the path that needs it
        from facepipe.models import BACKENDS

        # lazy: imported only on the path that needs it
        from facepipe.models.zoo import load
        from facepipe.swap.masks import AlignedCropMasks

        b = BACKENDS[model.backend]
        options = dict(providers=compute.providers, threads=compute.threads, batch_size=compute.batch_size)
        crop_masks = AlignedCropMasks(masks.face_mask, blur=masks.blur, padding=masks.padding, regions=regions,
                                      occluder=load(b.occluder, masks.occluder, **options) if masks.occluder else None,
                                      parser=load(b.parser, masks.parser, **options) if masks.parser else None)
    # The offline swaps work on the CPU, a face at a time: the job's threads are worker processes (a
    # short video's one segment would otherwise swap on one core). The learned ones give their
    # threads to ONNX Runtime.
    frame_size = None
    if plan is not None:
        manifest, _ = load_plan(plan)
        frame_size = (int(manifest["width"]), int(manifest["height"]))
    return swap_segment(faces, rows, swappers, out, crop_kind=kind, what=f"swap_faces {segment}",
                        occlusion=on_pixels and "occlusion" in masks.face_mask, masks=crop_masks,
                        regions=regions if on_pixels and "region" in masks.face_mask else None,
                        workers=max(1, compute.threads) if on_pixels else 1, frame_size=frame_size)
