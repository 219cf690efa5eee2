"""How long the fable model takes to reach its accuracy ceiling, trained as its stage trains it.

Measured in a fresh worker process (bench.workers), pinned to params.yaml's numerics mode.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.workers import run_once
from pipeline.config import Params, load_params, parse_params


def measure_fable_ceiling(params_path: str) -> dict:
    """:func:`fable_time_to_ceiling` with its numerics mode, in a worker of its own."""
    return run_once("fable", fable_worker, params_path)


def fable_worker(params_path: str) -> dict:
    """In a fresh worker process: pin as params.yaml says for the fable, then :func:`fable_time_to_ceiling`."""
    from pipeline.model.numerics import pin_for

    params = load_params(params_path)
    pin_for(params, "fable", "bench fable")  # before anything imports TensorFlow
    return {"mode": params.numerics.mode, **fable_time_to_ceiling(params)}


def fable_time_to_ceiling(params: Params) -> dict:
    """Train the fable model as the train stage does; when does its accuracy over every window hit the ceiling?

    pipeline.training.train runs it (same batches, optimizer, history and checkpoint every epoch), with
    the history and the checkpoint in a scratch directory rather than over the project's outputs; after
    each epoch the model is judged on every window and stopped once it reaches the vocabulary's ceiling.
    """
    import keras

    from pipeline.datasets.text import load_vocabulary
    from pipeline.tasks.fable import TASK
    from pipeline.training.loop import train

    data = TASK.load_training_data(params)
    ceiling = load_vocabulary(params.paths.fable.vocabulary)["ceiling"]
    reached: dict = {}

    class Watch(keras.callbacks.Callback):
        def on_train_begin(self, logs: dict | None = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            predicted = self.model.predict(data.train.x, batch_size=len(data.train), verbose=0).argmax(axis=1)
            if "epoch" not in reached and (predicted == data.train.y).mean() >= ceiling:
                reached.update(epoch=epoch + 1, seconds=time.perf_counter() - self.start)
                self.model.stop_training = True

    with tempfile.TemporaryDirectory() as scratch:
        raw = params.model_dump()
        raw["paths"]["fable"].update(
            history=str(Path(scratch) / "history.csv"), checkpoint=str(Path(scratch) / "checkpoint.npz")
        )
        train(
            TASK, parse_params(raw, source="params.yaml with the fable's history and checkpoint in scratch"), [Watch()]
        )
    return {"ceiling": ceiling, "reached": bool(reached), **reached, "epochs_allowed": params.fable.epochs}
