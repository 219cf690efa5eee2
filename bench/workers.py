"""A measurement in a fresh process of its own: one spawned single-worker process pool per measured configuration.

TensorFlow reads its kernels and threads once per process (pipeline.model.numerics.pin), so the
benchmark's own process never imports it: whatever runs TensorFlow (or PyTorch) runs in a worker started
by :class:`FreshProcess`, a ``concurrent.futures.ProcessPoolExecutor`` of one process in multiprocessing's
``spawn`` context. Spawned, the worker is a new interpreter that has imported nothing of this one's (a
forked one would inherit whatever the parent has loaded), so it can pin its numerics before TensorFlow
loads. It keeps its state from call to call: a throughput worker warms up once, then answers its timed
rounds. Its stdout and stderr (TensorFlow's logs, the pin's notes) go to a log, whose last lines come with
its error if it dies without answering; an exception it raises comes back with its traceback.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

Result = TypeVar("Result")
# Lines of a worker's traceback or log that come with its error.
TAIL = 30


class FreshProcess:
    """One worker process for one measured configuration, named ``name`` in its errors; a context manager."""

    def __init__(self, name: str):
        self.name = name
        # Removed when closed; the worker opens it by name and writes its stdout and stderr to it.
        self._log = tempfile.NamedTemporaryFile(prefix="bench-worker-", suffix=".log")  # noqa: SIM115
        self._pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_output_to,
            initargs=(self._log.name,),
        )

    def call(self, function: Callable[..., Result], /, *args: Any) -> Result:
        """``function(*args)`` in the worker process (started by the first call), and its result.

        ``function`` and ``args`` travel by pickle: a module-level function of a module the worker can
        import. Raises RuntimeError naming the worker: with the worker's traceback if ``function`` raised,
        with the last lines of its output if the process ended without answering (killed, out of memory).
        """
        try:
            return self._pool.submit(function, *args).result()
        except BrokenProcessPool as error:
            raise RuntimeError(
                f"benchmark worker {self.name} ended without answering ({error}):\n{self.output_tail()}"
            ) from None
        except Exception as error:
            # concurrent.futures sets the worker's formatted traceback as the cause
            remote = str(getattr(error.__cause__, "tb", "")).strip().strip('"').strip()
            raise RuntimeError(
                f"benchmark worker {self.name} failed: {_described(error)}\n"
                + "\n".join((remote or self.output_tail()).splitlines()[-TAIL:])
            ) from error

    def output_tail(self) -> str:
        """The last lines the worker printed."""
        return "\n".join(Path(self._log.name).read_text(encoding="utf-8", errors="replace").splitlines()[-TAIL:])

    def close(self) -> None:
        """Ends the worker (after the call it is running, if any) and removes its log."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._log.close()

    def __enter__(self) -> FreshProcess:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: TracebackType | None) -> None:
        self.close()


def run_once(name: str, function: Callable[..., Result], /, *args: Any) -> Result:
    """``function(*args)`` in a fresh worker process of its own, ended after it: see :meth:`FreshProcess.call`."""
    with FreshProcess(name) as worker:
        return worker.call(function, *args)


def _described(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _output_to(log: str) -> None:
    """In the worker, before its first call: stdout and stderr (the file descriptors, for C++ logs too) to ``log``."""
    sys.stdout.flush()
    sys.stderr.flush()
    descriptor = os.open(log, os.O_WRONLY | os.O_APPEND)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    os.close(descriptor)
