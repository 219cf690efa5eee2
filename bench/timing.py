"""Seconds and rates: the time of one action, a median rate, and the timed span of a training run's batch marks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence


def timed(action: Callable[[], object]) -> float:
    """Seconds ``action`` takes."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def median_rate(samples: int, timings: Sequence[float]) -> float:
    return samples / statistics.median(timings)


def timed_span(marks: Sequence[tuple[int, float]], batch: int) -> tuple[float, int]:
    """Seconds and samples between the first and the last of ``marks``: (index of the last batch done, time).

    With ``steps_per_execution`` > 1 Keras reports once per execution, with the index of its last batch:
    the samples are counted from the indices, not from the number of reports.
    """
    (first_index, first_time), (last_index, last_time) = marks[0], marks[-1]
    return last_time - first_time, (last_index - first_index) * batch
