"""facepipe.parallel.in_order: results in order, with the next items made while the pool works."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from facepipe.parallel import in_order


def test_results_come_in_order_with_a_bounded_number_in_flight_and_the_next_items_made_meanwhile():
    made, handed = [], []
    started = threading.Event()

    def items():
        for i in range(20):
            made.append(i)
            yield i

    def work(i):
        started.set()
        time.sleep(0.01 * (i % 3))  # later items may finish first
        return i * i

    with ThreadPoolExecutor(2) as pool:
        for item, result in in_order(pool, work, items(), 4):
            # At most 4 items submitted and not handed on; and more than the one being handed on
            # were made before it was (Executor.map in batches would make the next ones only now).
            assert len(made) - len(handed) <= 4
            assert len(made) > len(handed) + 1 or len(made) == 20
            handed.append(item)
            assert result == item * item
    assert handed == list(range(20)) and started.is_set()
