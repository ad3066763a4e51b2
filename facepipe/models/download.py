"""Fetch model files and prove they are the pinned bytes before anyone uses them.

Design rules, and why:

* A file only ever appears at its final path after its SHA-256 matched
  (download to ``<dest>.part``, verify, then ``os.replace``). A crash or a
  bad mirror can therefore never leave a half-written or tampered model where
  the workflow would load it.
* A local file that fails the check is moved aside to ``<dest>.corrupt``, not
  deleted, so a user can inspect it, and it is never used.
* Offline is a normal situation on cluster nodes: the error then says exactly
  which file to fetch by hand, its hash, and where to put it.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable
from pathlib import Path

from facepipe.media.integrity import digest_file
from facepipe.models import MODELS, ModelSpec

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


class ChecksumError(Exception):
    """A file's SHA-256 is not the pinned one."""


class ModelUnavailableError(Exception):
    """A model could not be obtained (offline, unreachable, or unpinned)."""


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file, streamed so 500 MB models do not sit in memory."""
    return digest_file(path)


def verify(path: str | Path, expected_sha256: str | Iterable[str]) -> str:
    """Raise ChecksumError unless ``path`` hashes to (one of) ``expected_sha256``.

    Returns the actual hash so callers can log it.
    """
    expected = (expected_sha256,) if isinstance(expected_sha256, str) else tuple(expected_sha256)
    expected = tuple(e.lower() for e in expected if e)
    if not expected:
        raise ChecksumError(f"{path}: no pinned SHA-256 to verify against")
    actual = sha256_file(path)
    if actual not in expected:
        raise ChecksumError(
            f"checksum mismatch for {path}: expected SHA-256 "
            f"{' or '.join(expected)}, got {actual}"
        )
    return actual


def manual_instructions(spec: ModelSpec, dest: str | Path) -> str:
    """Text telling a person how to install ``spec`` by hand at ``dest``."""
    source = spec.url
    if spec.archive:
        source = f"{spec.url} (extract member {spec.archive_member!r})"
    sha = " or ".join(spec.accepted_sha256) or "UNPINNED (no published SHA-256; pin one in facepipe/models/registry.py)"
    return (
        f"  {spec.filename} ({spec.key}, {spec.licence})\n"
        f"    download: {source}\n"
        f"    SHA-256:  {sha}\n"
        f"    put it at: {Path(dest).resolve()}"
    )


def fetch_all_missing_message(specs: Iterable[ModelSpec], models_dir: str | Path) -> str:
    """One message naming every missing model and where it must go.

    Returns "" when nothing is missing. Listing all of them at once spares a
    user the fetch-one-rerun-fail-again loop on an offline machine.
    """
    missing = [s for s in specs if not (Path(models_dir) / s.filename).is_file()]
    if not missing:
        return ""
    lines = [f"{len(missing)} model file(s) missing under {Path(models_dir).resolve()}:"]
    lines += [manual_instructions(s, Path(models_dir) / s.filename) for s in missing]
    lines.append("After placing them, rerun; each file is checked against its SHA-256.")
    return "\n".join(lines)


def _download(url: str, part: Path, *, timeout: float, log: logging.Logger) -> None:
    """Stream ``url`` into ``part``, logging progress roughly every 5 %."""
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0)
        done = 0
        next_report = 5
        while True:
            chunk = resp.read(_CHUNK)
            if not chunk:
                break
            out.write(chunk)
            done += len(chunk)
            if total:
                pct = done * 100 // total
                if pct >= next_report:
                    log.info("downloading %s: %d%% (%d/%d bytes)", part.name, pct, done, total)
                    next_report = (pct // 5 + 1) * 5
        if total and done != total:
            # A silently truncated transfer must be retried, not hashed.
            raise urllib.error.URLError(f"short read: got {done} of {total} bytes")
    log.info("downloaded %s (%d bytes)", url, done)


def _extract_member(zip_path: Path, member: str, out: Path) -> None:
    """Copy one member of ``zip_path`` to ``out``.

    Matches by exact path first, then by base name, because archives are
    sometimes repacked with a top-level folder (e.g. ``buffalo_l/det_10g.onnx``).
    """
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        name = member if member in names else None
        if name is None:
            candidates = [n for n in names if n.rsplit("/", 1)[-1] == member.rsplit("/", 1)[-1]]
            if len(candidates) != 1:
                raise ChecksumError(f"{zip_path}: member {member!r} not found (has {names})")
            name = candidates[0]
        with zf.open(name) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def fetch(
    spec: ModelSpec,
    dest: str | Path,
    *,
    retries: int = 3,
    timeout: float = 60,
    backoff: float = 2.0,
    log: logging.Logger = log,
) -> Path:
    """Ensure ``dest`` holds the verified model ``spec`` and return it.

    * ``dest`` exists and verifies: returned untouched (no network).
    * ``dest`` exists but is wrong: moved to ``dest.corrupt``, then re-fetched.
    * Network errors are retried ``retries`` times with exponential backoff
      (``backoff`` seconds, doubled each time); a checksum mismatch is not
      retried because the server would just send the same bytes again.
    * All attempts failed: ModelUnavailableError with manual instructions.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)

    if dest.exists():
        if not spec.pinned:
            # Nothing to verify against: it is the user's file, so use it but
            # print its hash so it can be pinned.
            log.warning(
                "%s has no pinned SHA-256 (UNVERIFIED); using the local file %s as is, "
                "its SHA-256 is %s", spec.key, dest, sha256_file(dest)
            )
            return dest
        try:
            verify(dest, spec.accepted_sha256)
            log.debug("%s already present and verified", dest)
            return dest
        except ChecksumError as exc:
            aside = dest.with_name(dest.name + ".corrupt")
            log.warning("%s; moving it aside to %s and downloading again", exc, aside)
            os.replace(dest, aside)

    if not spec.pinned:
        raise ModelUnavailableError(
            f"refusing to download {spec.filename}: no pinned SHA-256 to verify it "
            f"(see facepipe/models/registry.py). Fetch it yourself and check it:\n"
            + manual_instructions(spec, dest)
        )

    part = dest.with_name(dest.name + ".part")
    zip_part = dest.with_name(dest.name + ".zip.part") if spec.archive else None
    download_target = zip_part or part
    attempts = max(1, retries)
    last_error: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            log.info("fetching %s from %s (attempt %d/%d)", spec.filename, spec.url, attempt, attempts)
            _download(spec.url, download_target, timeout=timeout, log=log)
            break
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            last_error = exc
            _unlink(download_target)
            if attempt < attempts:
                delay = backoff * 2 ** (attempt - 1)
                log.warning("download of %s failed (%s); retrying in %.1f s", spec.url, exc, delay)
                time.sleep(delay)
    else:
        raise ModelUnavailableError(
            f"could not download {spec.filename} from {spec.url} after {attempts} attempt(s): "
            f"{last_error}\nInstall it by hand:\n" + manual_instructions(spec, dest)
        ) from last_error

    try:
        if zip_part is not None:
            try:
                _extract_member(zip_part, spec.archive_member or spec.filename, part)
            except zipfile.BadZipFile as exc:
                raise ChecksumError(f"{spec.url}: downloaded archive is not a valid zip ({exc})") from exc
        actual = verify(part, spec.accepted_sha256)
    except ChecksumError:
        _unlink(part)
        raise
    finally:
        if zip_part is not None:
            _unlink(zip_part)
    os.replace(part, dest)
    log.info("installed %s (SHA-256 %s)", dest, actual)
    return dest


def main(argv: list[str] | None = None) -> int:
    """``python -m facepipe.models.download KEY DEST``: fetch one model."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("key", choices=sorted(MODELS))
    parser.add_argument("dest", type=Path)
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        fetch(
            MODELS[args.key], args.dest, retries=args.retries, timeout=args.timeout,
            log=logging.getLogger("facepipe.models.download"),
        )
    except (ChecksumError, ModelUnavailableError) as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())


def _stamp(path: Path) -> tuple[Path, str]:
    """The stamp file that remembers a model's verified hash, and the signature it is valid for."""
    st = path.stat()
    return path.with_name(f".{path.name}.verified"), f"{st.st_size} {st.st_mtime_ns}"


def write_verified_stamp(path: str | Path, sha256: str) -> None:
    """Record that `path`, as it is now, has been verified (or made here) with this hash."""
    stamp, signature = _stamp(Path(path))
    tmp = stamp.with_name(stamp.name + ".tmp")
    tmp.write_text(f"{signature}\n{sha256}\n")
    os.replace(tmp, stamp)


def verify_before_use(path: str | Path, *, log: logging.Logger = log) -> None:
    """Refuse a real model whose bytes are not the pinned ones, whoever put it there.

    A file already on disk is never fetched again, so a file replaced or damaged after its
    download would otherwise run silently. The hash is remembered in a stamp next to the
    file (by size and mtime) so a 500 MB model is hashed once, not once per job.
    Stand-ins and files unknown to the registry are not checked here.
    """
    # lazy: the name means something else at this module's top
    from facepipe.models import MODELS

    path = Path(path)
    # A batched copy (facepipe.models.batching) is made here, like the FP16 variants.
    base_name = path.name.replace("_batched.onnx", ".onnx")
    spec = next((s for s in MODELS.values() if s.filename == base_name), None)
    if spec is None or path.parent.name == "standin":
        return
    stamp, signature = _stamp(path)
    try:
        if stamp.read_text().split("\n")[0] == signature:
            return
    except OSError:
        pass
    made_from = base_name if base_name != path.name else spec.derived_from
    if made_from:
        # Made here from a verified model (facepipe.models.fp16, facepipe.models.batching), which wrote the
        # stamp checked above.
        raise ChecksumError(f"refusing to use model {path}: it is not the file this workflow made from "
                            f"the verified {made_from} (changed or put there by hand). Delete it "
                            f"and rerun to make it again.")
    if not spec.accepted_sha256:
        log.warning("%s has no pinned SHA-256; using it unverified (sha256 %s)", path, sha256_file(path))
        return
    try:
        actual = verify(path, spec.accepted_sha256)
    except ChecksumError as exc:
        raise ChecksumError(f"refusing to use model {path}: {exc}. Delete it and rerun to fetch it again, "
                            f"or put a verified copy there by hand.") from None
    write_verified_stamp(path, actual)
    log.info("%s verified (sha256 %s)", path, actual)
