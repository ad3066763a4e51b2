"""What made a result, written into it, and checked whenever the workflow builds its plan.

Snakemake decides what to rerun from file times and from its own metadata in .snakemake/.
Both can be lost or misleading: delete work/ or .snakemake/ and change the source, and
Snakemake sees a result newer than everything it knows of, and keeps it. So the workflow keeps
its own account, independent of Snakemake's:

- Every result carries a **record** in its metadata: a digest of its inputs' content, the job's
  settings and the code version of each stage that makes it (`job_record`). At plan time the
  record in an existing result is compared with the job's current one. A result without a record
  was not made here and is never adopted or overwritten: the run stops before any job. A result
  whose record differs is remade.
- Every stage of a job has a **stamp**, `work/{name}/stamps/{stage}.json`, an input of its
  rule: the part of the record that stage depends on, and that stage's own code version. A stamp
  is rewritten (so it becomes newer than the stage's outputs, and Snakemake reruns the stage and
  everything after it) exactly when its content changes. A stamp that has to be made anew while
  the result's record matches the job (work/ deleted, nothing changed) is dated in the past, so
  nothing reruns.
- A job whose plan (the prepare_target checkpoint's folder) is gone cannot be judged by those
  stamps: Snakemake skips every check of a job whose inputs wait on an incomplete checkpoint, and
  the checkpoint runs only when a job after it must, so with work/ deleted and the source changed
  it would keep the old result ("Nothing to be done"). For that case the job has a **remake
  token**, `work/{name}/stamps/remake.json`, an input of prepare_target (which waits on no
  checkpoint): written with new content, dated now, whenever the plan is missing and the result
  is stale or a stage's stamp changed, so the plan is made again and everything after it is
  judged afresh; otherwise dated in the past, so it never makes anything rerun
  (`settle_remake_token`).

A stage's **code version** (`code_version`) digests exactly the code it runs: its rule script
and the facepipe modules that script imports, followed transitively through every import
statement in them (found by reading their source, so imports inside functions count too). Each
rule also takes it through params:, so Snakemake's own params trigger agrees with the stamps.
Upgrading the code reruns exactly the stages whose code changed, and those after them; an
intermediate is therefore always made by the code of the stage that reads it expects, and no
reader needs to tolerate the layouts of older versions.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import facepipe
from facepipe.faces import roles
from facepipe.workflow import options

# Which inputs and settings each stage's output depends on (besides the code version and the
# files it reads from earlier stages, which Snakemake follows by time): each option declares its
# stages in facepipe.workflow.options. Every option a rule takes through params: appears under its stage
# (tests/test_provenance.py checks the rules).
STAGES: dict[str, tuple[str, ...]] = options.stage_map()
# The files a job reads (their content is digested): target, source, reference.
INPUT_FILES = tuple(o.name for o in options.OPTIONS if o.type == "path" and o.stages)
# Settings that belong to the whole run rather than to a row of the sheet (degrade, min_free_gpu_mb).
GLOBAL_SETTINGS = tuple(o.name for o in options.OPTIONS if o.scope == options.RUN and o.stages)
# Made by a rule of the workflow: Snakemake follows such a file by its time, so its content
# is not digested (it may not exist yet when the plan is made).
MADE_BY_WORKFLOW = "made by the workflow"
MISSING = "missing"
STAMP_DIR = "stamps"
# The remake token's name among the stamps (settle_remake_token).
REMAKE_TOKEN = "remake"
# The time given to a stamp made anew for a job whose result is current: older than any output.
PAST = 1


# --- code versions ---------------------------------------------------------------------------

# Calls that import a module named at run time: a module that makes one may import any module
# of its own package, so all of them count (an over-approximation; missing one is not allowed).
_DYNAMIC_IMPORTS = {"import_module", "__import__", "iter_modules", "walk_packages"}


def package_modules(package_dir: str | Path) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package at package_dir."""
    package_dir = Path(package_dir)
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported(tree: ast.Module, name: str, is_package: bool, modules: dict[str, Path]) -> set[str]:
    """The package's modules that the module `name` (parsed as tree) may import."""
    found = set()
    own_package = name if is_package else name.rpartition(".")[0]

    def absolute(module: str | None, level: int) -> str:
        if not level:
            return module or ""
        base = own_package.split(".")
        base = base[:len(base) - (level - 1)]
        return ".".join(base + ([module] if module else []))

    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and ":" in node.value:
            # A "module:Class" string, as a router names the classes it imports at run time
            # ("facepipe.models.inswapper:InSwapper"), counts as an import of the module. (A bare
            # module name does not: facepipe.workflow.rule_script names error classes' modules that it only
            # looks for among those already imported.)
            named = node.value.partition(":")[0]
            if named in modules:
                found.add(named)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = absolute(node.module, node.level)
            found.add(module)
            # `from package import name`: name may be a submodule.
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called not in _DYNAMIC_IMPORTS:
                continue
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and called in ("import_module",
                                                                                          "__import__"):
                text = arg.value
                level = len(text) - len(text.lstrip("."))
                found.add(absolute(text.lstrip(".") or None, level))
            else:
                found.update(m for m in modules if not own_package or m == own_package
                             or m.startswith(own_package + "."))
    return found


class CodeVersions:
    """Code versions of rule scripts against one package (its modules read and parsed once)."""

    def __init__(self, package_dir: str | Path | None = None):
        self.package_dir = Path(package_dir or Path(facepipe.__file__).parent)
        self.modules = package_modules(self.package_dir)
        self._imports: dict[str, set[str]] = {}
        self._strings: dict[str, set[str]] = {}
        self.data_files = sorted(p for p in self.package_dir.rglob("*")
                                 if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts)

    def _parse(self, name: str, path: Path) -> tuple[set[str], set[str]]:
        """The package's modules a module (or script) imports, and its string constants."""
        tree = ast.parse(path.read_bytes(), filename=str(path))
        imported = _imported(tree, name, path.name == "__init__.py", self.modules)
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        return {m for m in imported if m in self.modules}, strings

    def _scan(self, name: str) -> set[str]:
        # Package modules are read once: the package does not change while the workflow is planned.
        if name not in self._imports:
            self._imports[name], self._strings[name] = self._parse(name, self.modules[name])
        return self._imports[name]

    def modules_of(self, script: str | Path) -> list[str]:
        """The package's modules the script runs: those it imports, transitively, and the
        packages that hold them (importing a.b runs a/__init__.py first)."""
        return self._closure(self._parse("__main__", Path(script))[0])

    def _closure(self, imported: set[str]) -> list[str]:
        todo = sorted(imported)
        seen: set[str] = set()
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            parents = [name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)]
            todo += [m for m in (*self._scan(name), *parents) if m not in seen]
        return sorted(seen)

    def files_of(self, script: str | Path) -> list[Path]:
        """The files whose content the script's results depend on: the script, its modules, and
        the package's data files they name (a file whose name appears in one of their strings)."""
        imported, strings = self._parse("__main__", Path(script))
        names = self._closure(imported)
        strings = strings.union(*(self._strings[n] for n in names))
        data = [f for f in self.data_files if any(f.name in text for text in strings)]
        return [Path(script), *(self.modules[n] for n in names), *data]

    def version(self, script: str | Path) -> str:
        """Digest of the script's name and content and of each package file it depends on."""
        script = Path(script)
        h = hashlib.sha256()
        for i, path in enumerate(self.files_of(script)):
            # The script by its own name (scripts/NAME.py), the package's files by their place in
            # it: the version does not depend on where the workflow or the package lies.
            name = f"scripts/{script.name}" if i == 0 else path.relative_to(self.package_dir.parent).as_posix()
            h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
        return h.hexdigest()[:16]


_VERSIONS: dict[Path, CodeVersions] = {}


def code_version(script: str | Path, package_dir: str | Path | None = None) -> str:
    """A rule script's code version: the script and the facepipe modules it imports, transitively
    (see CodeVersions). The package is the one imported here, i.e. the code the scripts run."""
    key = Path(package_dir or Path(facepipe.__file__).parent).resolve()
    if key not in _VERSIONS:
        _VERSIONS[key] = CodeVersions(key)
    return _VERSIONS[key].version(script)


def _code_files_state(scripts_dir: Path, package: Path) -> list:
    """(path, size, mtime in ns) of every file the code versions are made from: a change to any
    of them shows here."""
    state = []
    for folder in (scripts_dir, package):
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                st = path.stat()
                state.append([str(path), st.st_size, st.st_mtime_ns])
    return state


# Versions this process computed or read, by (scripts folder, package, files' state).
_RULE_VERSIONS: dict[tuple[str, str], tuple[list, dict[str, str]]] = {}


def rule_code_versions(scripts_dir: str | Path, cache_file: str | Path | None = None, *,
                       save: bool = False) -> dict[str, str]:
    """Script name (without .py) -> code_version, for every rule script in ``scripts_dir``.

    Computed once per process. With ``cache_file``, versions saved there are taken when every
    script and package file still has the size and time it had then (the cache names the
    scripts folder and package by their files' paths, so another workflow's never matches): a
    job's own process (a cluster job) reads what its run's main process saved instead of reading
    every module again. Only ``save`` writes the cache (the main process of a real run does); a
    dry run, --report or a job process only reads it. Nothing is passed through the environment.
    """
    scripts_dir = Path(scripts_dir).resolve()
    package = Path(facepipe.__file__).parent.resolve()
    state = _code_files_state(scripts_dir, package)
    key = (str(scripts_dir), str(package))
    known = _RULE_VERSIONS.get(key)
    versions = known[1] if known and known[0] == state else None
    saved_state = None
    if versions is None and cache_file is not None:
        try:
            saved = json.loads(Path(cache_file).read_text())
            saved_state = saved["files"]
            if saved_state == state:
                versions = saved["versions"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    if versions is None:
        versions = {path.stem: code_version(path) for path in sorted(scripts_dir.glob("*.py"))}
    _RULE_VERSIONS[key] = (state, versions)
    if save and cache_file is not None and saved_state != state:
        try:
            Path(cache_file).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(f"{cache_file}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"files": state, "versions": versions}))
            os.replace(tmp, cache_file)
        except OSError:
            pass  # a cache that cannot be written costs the next run time, not this one
    return versions


def digest_or_missing(digest):
    """A digest function that gives MISSING for a file that is not there (Snakemake then stops
    on the missing input, naming it) instead of failing while the plan is made."""
    return lambda path: digest(path) if Path(path).is_file() else MISSING


class DigestCache:
    """File content digests, remembered by (path, size, mtime, inode) between runs: a target of
    several GB is read once, not at every plan. A file that changes gets a new entry."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}
        self.changed = False

    def digest(self, file: str | Path) -> str:
        # lazy: the Snakefile imports this module while it parses, so it loads only what it uses
        from facepipe.media.integrity import digest_file

        file = Path(file)
        st = file.stat()
        key = str(file.resolve())
        ident = [st.st_size, st.st_mtime_ns, st.st_ino]
        entry = self.entries.get(key)
        if entry and entry.get("id") == ident:
            return entry["sha256"]
        value = digest_file(file)
        self.entries[key] = {"id": ident, "sha256": value}
        self.changed = True
        return value

    def save(self) -> None:
        if not self.changed:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.entries))
        os.replace(tmp, self.path)


def result_stages(job: dict, *, is_image: bool) -> list[str]:
    """The stages whose outputs make up a job's result (not the cast, preview or QC beside it):
    their code versions go into the result's record."""
    stages = ["prepare_target", "detect_faces", "track_faces", "embed_face", "swap_faces"]
    if job["enhancer"] != "none":
        stages.append("enhance_faces")
    return stages + (["finalize_image"] if is_image else ["render_segment", "mux_video"])


def job_record(job: dict, config: dict, *, code: dict[str, str], digest, made_by_workflow) -> dict:
    """The record of what makes a job's result: its input files' content, settings and code.

    `code` maps each stage that makes the result (result_stages) to its code version: a result
    made by other code for any of them is remade, and a change to the code of a stage that does
    not feed the result (QC, say) leaves it alone. `digest(path)` gives a file's content digest;
    `made_by_workflow(path)` says whether a rule makes the file (then it is not digested: it may
    not exist yet).
    """
    # lazy: the Snakefile imports this module while it parses, so it loads only what it uses
    from facepipe.workflow.jobs import face_images

    inputs = {}
    for role, path in {"target": job["target"], **face_images(job)}.items():
        inputs[role] = MADE_BY_WORKFLOW if made_by_workflow(path) else digest(path)
    settings = {k: v for k, v in job.items() if k not in (*INPUT_FILES, "name")}
    settings.update({k: config.get(k) for k in GLOBAL_SETTINGS})
    return {"facepipe": facepipe_version(), "code": dict(code), "inputs": inputs, "settings": settings}


def facepipe_version() -> str:
    try:
        return version("facepipe")
    except PackageNotFoundError:
        return "unknown"


def record_text(record: dict) -> str:
    """The record as it is written into a result (compact, keys sorted: equal records, equal text)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)


def stage_stamp(record: dict, stage: str, code: str) -> str:
    """A stage's stamp content: the parts of the record it depends on, and its own code version."""
    wanted = STAGES[stage]
    # A map's photos are inputs map0, mapref0, ... (facepipe.faces.roles): "map" wants them all.
    part = {"code": code,
            "inputs": {k: v for k, v in record["inputs"].items()
                       if k in wanted or ("map" in wanted and roles.from_map(k))},
            "settings": {k: v for k, v in record["settings"].items() if k in wanted}}
    return json.dumps(part, sort_keys=True, indent=1, default=str) + "\n"


def stamp_path(name: str, stage: str) -> str:
    return f"work/{name}/{STAMP_DIR}/{stage}.json"


def remake_token_path(name: str) -> str:
    return stamp_path(name, REMAKE_TOKEN)


def plan_path(name: str) -> str:
    """The prepare_target checkpoint's output folder (the segment plan)."""
    return f"work/{name}/segments"


def remake_token_wanted(name: str, *, remake: bool) -> bool:
    """Whether job `name`'s remake token asks for a remake (see settle_remake_token): `remake`
    (the result is stale or a stage's stamp changed) while the plan is missing. Reads only."""
    return remake and not Path(plan_path(name)).is_dir()


def settle_remake_token(name: str, *, remake: bool) -> bool:
    """Write job `name`'s remake token (see the module's docstring); returns whether it asks for a
    remake. `remake`: the result is stale or a stage's stamp changed. Only a missing plan needs
    the token: with the plan there, Snakemake judges every job by its stamps and records.

    The token's new content is unique (the time and process), so Snakemake's record of an earlier
    token's checksum never makes it look unchanged. A token that asks for nothing is dated in the
    past, which also takes back one an interrupted run wrote.
    """
    path = Path(remake_token_path(name))
    path.parent.mkdir(parents=True, exist_ok=True)
    if remake_token_wanted(name, remake=remake):
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(remake_token_text())
        os.replace(tmp, path)
        return True
    if not path.exists():
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"remake": None}) + "\n")
        os.replace(tmp, path)
    if path.stat().st_mtime != PAST:
        os.utime(path, (PAST, PAST))
    return False


def remake_token_text() -> str:
    """A remake token's content when it asks for a remake: unique to this moment and process."""
    return json.dumps({"remake": f"{time.time_ns()}-{os.getpid()}"}) + "\n"


def result_state(result: str | Path, record: dict, read_record) -> str:
    """'absent', 'foreign' (a file the workflow did not make), 'current' or 'stale'."""
    result = Path(result)
    if not result.exists():
        return "absent"
    found = read_record(result)
    if found is None:
        return "foreign"
    try:
        found = json.loads(found)
    except ValueError:
        return "stale"
    return "current" if found == json.loads(record_text(record)) else "stale"


# What a run does with a stage's stamp (planned_stamps).
KEEP, WRITE_PAST, WRITE_NOW = "keep", "past", "now"


def planned_stamps(name: str, record: dict, state: str, code: dict[str, str], stages=STAGES, *,
                   dry_run: bool = False) -> dict[str, tuple[str, str]]:
    """stage -> (the stamp's content, what a run does with the stamp file): KEEP it as it is,
    write it dated in the PAST (WRITE_PAST: made anew for a current result, so nothing reruns), or
    write it dated now (WRITE_NOW: the stage reruns). Reads the stamps, writes nothing.

    `code` maps every stage to its code version (code_version of its rule script).

    A stamp is rewritten only when its content changes. One made anew is dated in the past when
    the result is current (nothing needs remaking), else now. A stale result also renews the final
    stage's stamp, so at least the result is remade even when every stage's stamp still matches.
    For a dry run (`dry_run`) an existing stamp is always kept: trying a setting with -n must not
    make the next real run with the old setting redo anything (a dry run writes nothing anyway:
    what it plans is what a real run would do with the stamps it finds).
    """
    plan = {}
    for stage in stages:
        path = Path(stamp_path(name, stage))
        content = stage_stamp(record, stage, code[stage])
        try:
            old = path.read_text()
        except OSError:
            old = None
        if old is not None and dry_run:
            action = KEEP
        elif old == content and not (state == "stale" and stage in ("mux_video", "finalize_image")):
            action = KEEP
        elif old is None and state == "current":
            action = WRITE_PAST
        else:
            action = WRITE_NOW
        plan[stage] = (content, action)
    return plan


def settle_stamps(name: str, record: dict, state: str, code: dict[str, str], stages=STAGES, *,
                  dry_run: bool = False) -> list[str]:
    """Write the job's stage stamps as planned_stamps plans them; returns the stages whose stamp
    changed (they rerun)."""
    renewed = []
    for stage, (content, action) in planned_stamps(name, record, state, code, stages, dry_run=dry_run).items():
        if action == KEEP:
            continue
        path = Path(stamp_path(name, stage))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(content)
        os.replace(tmp, path)
        if action == WRITE_PAST:
            os.utime(path, (PAST, PAST))
        else:
            renewed.append(stage)
    return renewed
