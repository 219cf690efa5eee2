"""Test seam: ``kill -9`` of the train stage at an exact point, for the reliability tests.

A test that wants the kill puts this directory on ``PYTHONPATH`` and sets ``PIPELINE_KILL_AT``
(:func:`conftest.kill_at` gives both) for one ``dvc repro``. Python imports ``sitecustomize`` at the
start of every process, DVC's stage processes included; when ``pipeline.training.loop`` is imported, its
``run`` is wrapped to train with one more callback, which makes the process send itself SIGKILL (no
handler runs, nothing is flushed, exactly as ``kill -9`` from outside) at:

- ``EPOCH:BATCH`` - after batch BATCH (1-based) of epoch EPOCH (1-based), mid-epoch;
- ``EPOCH:checkpoint`` - right after the checkpoint of epoch EPOCH is written (the callback runs after it).

``PIPELINE_PAUSE_AT=EPOCH:FILE`` instead pauses the stage after epoch EPOCH (its metrics logged): it creates
FILE and goes on once FILE is deleted, so that a test can stop the tracking server at that point.

Nothing of this is in the pipeline: it only offers ``pipeline.training.run(..., callbacks)``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import signal
import sys

VARIABLE = "PIPELINE_KILL_AT"
PAUSE = "PIPELINE_PAUSE_AT"
_TARGET = "pipeline.training.loop"


def _kill_point() -> tuple[int, str]:
    spec = os.environ[VARIABLE]
    epoch, _, where = spec.partition(":")
    if not epoch.isdigit() or not (where == "checkpoint" or where.isdigit()):
        raise ValueError(f"{VARIABLE}={spec!r}: expected EPOCH:BATCH or EPOCH:checkpoint")
    return int(epoch), where


def _kill() -> None:
    print(f"{VARIABLE}={os.environ[VARIABLE]}: sending SIGKILL to this process", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def _killer(epoch: int, where: str):
    import keras

    class Killer(keras.callbacks.Callback):
        current = 0

        def on_epoch_begin(self, index: int, logs: dict | None = None) -> None:
            self.current = index + 1

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            # With several steps per execution Keras reports its last batch: kill after the one holding BATCH.
            if where != "checkpoint" and self.current == epoch and batch + 1 >= int(where):
                _kill()

        def on_epoch_end(self, index: int, logs: dict | None = None) -> None:
            if where == "checkpoint" and index + 1 == epoch:
                _kill()

    return Killer()


def _pauser(epoch: int, file: str):
    import time

    import keras

    class Pauser(keras.callbacks.Callback):
        def on_epoch_end(self, index: int, logs: dict | None = None) -> None:
            if index + 1 == epoch:
                print(f"{PAUSE}: paused after epoch {epoch} until {file} is deleted", flush=True)
                open(file, "w").close()
                while os.path.exists(file):
                    time.sleep(0.1)

    return Pauser()


def _fault():
    if os.environ.get(VARIABLE):
        return _killer(*_kill_point())
    epoch, _, file = os.environ[PAUSE].partition(":")
    return _pauser(int(epoch), file)


def _wrap(training) -> None:
    run = training.run

    def run_then_kill(task, params, callbacks=()):
        return run(task, params, [*callbacks, _fault()])

    training.run = run_then_kill


class _AfterTrainingLoads(importlib.abc.MetaPathFinder):
    """Finds ``pipeline.training.loop`` as usual, and wraps its ``run`` once the module has executed."""

    def find_spec(self, name, path, target=None):
        if name != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            execute = spec.loader.exec_module

            def exec_module(module) -> None:
                execute(module)
                _wrap(module)

            spec.loader.exec_module = exec_module
        return spec


if os.environ.get(VARIABLE) or os.environ.get(PAUSE):
    sys.meta_path.insert(0, _AfterTrainingLoads())
