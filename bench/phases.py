"""The benchmark's phases run in turn: each announced on stderr, timed, and its figures written as soon as it ends."""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import write_results
from pipeline.cli import debugging, duration


@dataclass(frozen=True)
class Phase:
    """One part of the benchmark: its key in the results, what it measures, how, and its headline figure."""

    key: str
    title: str
    run: Callable[[], dict]
    headline: Callable[[dict], str]


def say(line: str) -> None:
    """A progress line on stderr (stdout gets the table), shown at once even through a pipe."""
    print(f"bench: {line}", file=sys.stderr, flush=True)


def run_phases(phases: Sequence[Phase], output: str | Path) -> dict:
    """Run ``phases`` in turn; after each, rewrite ``output`` (atomically) with every figure so far and its table.

    A phase that raises is recorded as ``{"error": message}`` under its key and the next one runs: the
    phases do not depend on each other. Ctrl-C stops at once, with the earlier phases' figures on disk.
    """
    results: dict[str, Any] = {}
    for phase in phases:
        say(f"{phase.key} ({phase.title}) ...")
        start = time.perf_counter()
        try:
            results[phase.key] = phase.run()
        except Exception as error:
            results[phase.key] = {"error": f"{type(error).__name__}: {error}"}
            say(f"{phase.key} failed after {duration(time.perf_counter() - start)}: {results[phase.key]['error']}")
            if debugging():
                traceback.print_exc()
        else:
            say(f"{phase.key} done in {duration(time.perf_counter() - start)}: {phase.headline(results[phase.key])}")
        write_results(output, results)
    return results


def failed(results: dict) -> list[str]:
    """The keys of the phases that failed."""
    return [key for key, item in results.items() if isinstance(item, dict) and "error" in item]
