"""Progress lines of the per-segment stages (facepipe.progress)."""

import logging

from facepipe.progress import Progress, counted, duration


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_line_every_tenth_of_the_frames_and_every_ten_seconds(caplog):
    clock = Clock()
    log = logging.getLogger("progress-test")
    with caplog.at_level(logging.INFO, logger="progress-test"):
        with Progress(200, "detect_faces seg_0001", log, clock=clock) as progress:
            for i in range(200):
                clock.now += 0.01 if i < 100 else 0.5  # slow second half: lines by time too
                progress.update()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "detect_faces seg_0001: 20/200 frames (10%), 100.0 frames/s, 2 s left"
    assert lines[-1].startswith("detect_faces seg_0001: 200/200 frames (100%)")
    counts = [int(line.split(": ")[1].split("/")[0]) for line in lines]
    assert counts == sorted(counts) and all(b - a <= 20 for a, b in zip([0] + counts, counts))
    # the slow half (0.5 s a frame) logs every 10 s, i.e. every 20 frames, and at every tenth
    assert len(lines) >= 10


def test_counted_counts_an_item_when_the_next_is_asked_for(caplog):
    log = logging.getLogger("progress-test")
    progress = Progress(3, "x", log, clock=Clock())
    seen = []
    for item in counted([[1, 2], [3]], progress, frames=len):
        seen.append(progress.done)
    assert seen == [0, 2] and progress.done == 3


def test_durations_read_well():
    assert duration(3.2) == "3 s"
    assert duration(125) == "2 min 05 s"
    assert duration(3720) == "1 h 02 min"
