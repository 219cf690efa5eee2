"""Stage train: the one training loop both seeds go through.

Run::

    python -m pipeline.train mnist
    python -m pipeline.train fable

The task (pipeline.mnist or pipeline.fable) supplies data and network; this module seeds, compiles,
fits epoch by epoch, writes the per-epoch history where ``dvc plots`` reads it, saves the model as a
timestamp-free ``.keras`` archive, and records all of it as one MLflow run (pipeline.tracking).
"""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import keras
import mlflow

from pipeline import tracking
from pipeline.config import Params, Training, load_params
from pipeline.files import write_bytes
from pipeline.model import save_model, seed_everything
from pipeline.reports import training_curves
from pipeline.stage import run_stage, stage_parser
from pipeline.tasks import TASK_NAMES, Task, TrainingData, get_task

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")

_OPTIMIZERS = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop, "sgd": keras.optimizers.SGD}


def make_optimizer(training: Training, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    rate: float | keras.optimizers.schedules.LearningRateSchedule = training.learning_rate
    if training.learning_rate_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(training.learning_rate, decay_steps=training.epochs * steps_per_epoch)
    return _OPTIMIZERS[training.optimizer](learning_rate=rate)


class HistoryWriter(keras.callbacks.Callback):
    """Rewrites the history CSV at every epoch's end, so a long run can be watched with ``dvc plots``."""

    def __init__(self, path: str):
        super().__init__()
        self.path, self.rows = path, []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.rows.append({"epoch": epoch + 1, **(logs or {})})
        columns = [column for column in HISTORY_COLUMNS if column in self.rows[0]]
        text = io.StringIO()
        text.write(",".join(columns) + "\n")
        for row in self.rows:
            text.write(",".join(str(row[c]) if c == "epoch" else repr(float(row[c])) for c in columns) + "\n")
        write_bytes(self.path, text.getvalue().encode())


def compiled_model(task: Task, params: Params, data: TrainingData) -> keras.Model:
    """``task``'s network, seeded and compiled with its optimizer, loss and metric: ready to fit."""
    training = params.training(task.name)
    seed_everything(training.seed)
    model = task.build_model(params, data)
    model.compile(
        optimizer=make_optimizer(training, math.ceil(len(data.train) / training.batch_size)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def train(task: Task, params: Params, callbacks: Sequence[keras.callbacks.Callback] = ()) -> keras.Model:
    """Fit ``task``'s model as params.yaml says and return it; the history is written as it goes."""
    training = params.training(task.name)
    data: TrainingData = task.load_training_data(params)
    model = compiled_model(task, params, data)
    validation = (data.validation.x, data.validation.y) if data.validation is not None else None
    model.fit(
        data.train.x,
        data.train.y,
        batch_size=training.batch_size,
        epochs=training.epochs,
        validation_data=validation,
        shuffle=True,
        # One line per epoch when logged to a file or by DVC; a progress bar in a terminal.
        verbose=1 if sys.stdout.isatty() else 2,
        callbacks=[HistoryWriter(params.paths_of(task.name).history), *callbacks],
    )
    return model


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser("pipeline.train", __doc__)
    parser.add_argument("model", choices=TASK_NAMES)
    args = parser.parse_args(argv)
    with run_stage(f"train {args.model}"):
        params = load_params(args.params)
        task, paths = get_task(args.model), params.paths_of(args.model)
        with tracking.training_run(task, params):
            model = train(task, params, callbacks=[tracking.EpochLogger()])
            save_model(model, paths.model)
            tracking.log_trained_model(model, Path(paths.model), [paths.history, *task.extra_artifacts(params)])
            mlflow.log_figure(training_curves(Path(paths.history), f"{task.name} training"), "plots/training_curves.png")


if __name__ == "__main__":
    main()
