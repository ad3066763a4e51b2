"""Fault switches for the workflow tests, outside the product: with this folder first on PYTHONPATH
(tests.workflow_helpers.fault_env), every Python process of a run wraps facepipe.gpu.start, which
each GPU rule calls first, so that a rule named in a switch fails on its first attempt:

- FACEPIPE_TEST_INJECT_GPU_OOM="rule[,rule...]": as if the GPU ran out of memory, so the
  retry-and-degrade path can be proven on a CPU machine;
- FACEPIPE_TEST_INJECT_FAILURE="rule[,rule...]": with an ordinary error (not memory), so the
  no-retry path can be proven; "rule:enospc" fails as if the disk were full.

facepipe.gpu is wrapped when it is first imported (an import hook), not imported here: importing
facepipe at interpreter start would run its __init__ before a rule script is __main__.
"""

from __future__ import annotations

import errno
import importlib.abc
import importlib.util
import os
import sys

INJECT_ENV = "FACEPIPE_TEST_INJECT_GPU_OOM"
INJECT_FAILURE_ENV = "FACEPIPE_TEST_INJECT_FAILURE"


def inject(rule: str, gpu_memory_error: type[Exception]) -> None:
    """Raise the failure the switches ask of rule's first attempt, if any."""
    if rule in {r.strip() for r in os.environ.get(INJECT_ENV, "").split(",") if r.strip()}:
        raise gpu_memory_error(f"injected GPU out-of-memory in {rule} (test switch {INJECT_ENV})")
    for item in os.environ.get(INJECT_FAILURE_ENV, "").split(","):
        name, _, kind = item.strip().partition(":")
        if name != rule:
            continue
        if kind == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        raise ValueError(f"injected failure in {rule} (test switch {INJECT_FAILURE_ENV})")


def wrap(gpu) -> None:
    """Make gpu.start fail a switched rule's first attempt, after its own work (the record)."""
    start = gpu.start

    def start_with_faults(rule, attempt, *args, **kwargs):
        degradation = start(rule, attempt, *args, **kwargs)
        if attempt == 1:
            inject(rule, gpu.GpuMemoryError)
        return degradation

    gpu.start = start_with_faults


class _WrapOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "facepipe.gpu":
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_wrap(module):
            exec_module(module)
            wrap(module)

        spec.loader.exec_module = exec_and_wrap
        return spec


if os.environ.get(INJECT_ENV) or os.environ.get(INJECT_FAILURE_ENV):
    sys.meta_path.insert(0, _WrapOnImport())
