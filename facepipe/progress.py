"""Progress lines for the per-segment stages: a long segment on a CPU is not silent until it ends.

A stage counts its frames through a ``Progress``; it logs ``what: done/total frames (percent),
frames per second, time left`` whenever another tenth of the frames is done or ``interval``
seconds have passed since the last line, whichever comes first, and a last line at the end.
The lines go to the job's log and, marked CONSOLE, to the console as well
(facepipe.workflow.rule_script), so a run shows each running job's progress without anyone opening a
log. It stands at the package's root because every floor uses it: detection, the swap and QC.
"""

from __future__ import annotations

import logging
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

STEP = 0.1  # a line at least every tenth of the frames
INTERVAL = 10.0  # ... or every this many seconds
# extra= of a record the console shows although it is not a warning (facepipe.workflow.rule_script).
CONSOLE = {"console": True}


def say(log: logging.Logger, message: str, *args) -> None:
    """An info line the console shows too: a step of a job that counts no frames."""
    log.info(message, *args, extra=CONSOLE)


def duration(seconds: float) -> str:
    """3 s, 2 min 05 s, 1 h 02 min."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Counts frames done and logs a progress line every STEP of them or every INTERVAL seconds."""

    def __init__(self, total: int, what: str, log: logging.Logger, *, interval: float = INTERVAL,
                 step: float = STEP, clock=time.monotonic):
        self.total, self.what, self.log = max(0, int(total)), what, log
        self.interval, self.clock = interval, clock
        self.every = max(1, int(self.total * step)) if self.total else 1
        self.done = 0
        self.start = self.last_time = clock()
        self.next_count = self.every
        self.logged = -1  # the count the last line showed

    def update(self, frames: int = 1) -> None:
        self.done += frames
        now = self.clock()
        if self.done >= self.next_count or now - self.last_time >= self.interval:
            self._line(now)

    def _line(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        left = (f", {duration((self.total - self.done) / rate)} left"
                if self.total and rate > 0 and self.done < self.total else "")
        self.log.info("%s: %d/%d frames%s, %.1f frames/s%s", self.what, self.done, self.total, share, rate, left,
                      extra=CONSOLE)
        self.last_time, self.logged = now, self.done
        while self.next_count <= self.done:
            self.next_count += self.every

    def close(self) -> None:
        """The last line, unless the last update wrote it already."""
        if self.logged != self.done:
            self._line(self.clock())

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


def counted(items: Iterable[T], progress: Progress, frames=lambda item: 1) -> Iterator[T]:
    """The items, passed on unchanged, each counted as frames(item) frames once the consumer asks
    for the next one (so a frame counts when the work on it is done)."""
    pending = 0
    for item in items:
        if pending:
            progress.update(pending)
        yield item
        pending = frames(item)
    if pending:
        progress.update(pending)
