"""Work handed to a process pool in order, with a bounded number of items in flight."""

from __future__ import annotations

from collections import deque
from concurrent.futures import Executor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def in_order(pool: Executor, fn: Callable[[T], R], items: Iterable[T], in_flight: int) -> Iterator[tuple[T, R]]:
    """(item, fn(item)) for each item, in the items' order, computed in ``pool`` with at most
    ``in_flight`` items submitted and not yet handed on: the caller makes the next items (decodes
    the next frames) while the pool works on these, and memory stays bounded. (Submitting a batch
    and waiting for all of it, as Executor.map does, leaves the pool idle while the caller makes the
    next batch.)"""
    flight: deque = deque()
    for item in items:
        flight.append((item, pool.submit(fn, item)))
        if len(flight) >= in_flight:
            item, done = flight.popleft()
            yield item, done.result()
    while flight:
        item, done = flight.popleft()
        yield item, done.result()
