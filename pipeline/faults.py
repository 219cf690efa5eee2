"""Fault injection for the reliability tests: ``kill -9`` of the train stage at an exact point.

``PIPELINE_KILL_AT`` makes the training process send itself SIGKILL (no handler runs, nothing is
flushed, exactly as ``kill -9`` from outside) at one point of its run:

- ``EPOCH:BATCH`` - after batch BATCH (1-based) of epoch EPOCH (1-based), mid-epoch;
- ``EPOCH:checkpoint`` - right after the checkpoint of epoch EPOCH is written.

Unset (always, outside tests), nothing here does anything. docs/reliability.md lists the tests using it.
"""

from __future__ import annotations

import os
import signal

import keras

from pipeline.errors import PipelineError

VARIABLE = "PIPELINE_KILL_AT"


def _kill_point() -> tuple[int, str] | None:
    spec = os.environ.get(VARIABLE)
    if not spec:
        return None
    epoch, _, where = spec.partition(":")
    if not epoch.isdigit() or not (where == "checkpoint" or where.isdigit()):
        raise PipelineError(f"{VARIABLE}={spec!r}: expected EPOCH:BATCH or EPOCH:checkpoint")
    return int(epoch), where


def _kill() -> None:
    print(f"{VARIABLE}={os.environ[VARIABLE]}: sending SIGKILL to this process", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


class _KillMidEpoch(keras.callbacks.Callback):
    def __init__(self, epoch: int, batch: int):
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.current = epoch + 1

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        # With several steps per execution Keras reports its last batch: kill after the one holding BATCH.
        if self.current == self.epoch and batch + 1 >= self.batch:
            _kill()


def callbacks() -> list[keras.callbacks.Callback]:
    point = _kill_point()
    return [_KillMidEpoch(point[0], int(point[1]))] if point and point[1] != "checkpoint" else []


def after_checkpoint(epoch: int) -> None:
    point = _kill_point()
    if point == (epoch, "checkpoint"):
        _kill()
