"""The one training loop both seeds go through (the train stage, ``python -m pipeline.stages.train``, runs it).

The task (pipeline.tasks.mnist or pipeline.tasks.fable) supplies data and network; this module seeds, compiles,
fits, writes the per-epoch history where ``dvc plots`` reads it, checkpoints every epoch
(pipeline.training.checkpoint) so that a killed run resumes to the same bytes, saves the model as a
timestamp-free ``.keras`` archive, and records all of it as one MLflow run (pipeline.tracking.runs).
"""

from __future__ import annotations

import io
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline import dependencies
from pipeline.cli import duration
from pipeline.config import Params, Training
from pipeline.errors import PipelineError
from pipeline.files import write_bytes
from pipeline.model.inference import INFERENCE_BATCH
from pipeline.model.network import seed_everything
from pipeline.model.saving import save_model
from pipeline.tasks.base import Examples, Task, TrainingData
from pipeline.tracking import reuse, runs
from pipeline.training import checkpoint

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")

_OPTIMIZERS = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop, "sgd": keras.optimizers.SGD}


def make_optimizer(training: Training, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    rate: float | keras.optimizers.schedules.LearningRateSchedule = training.learning_rate
    if training.learning_rate_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(
            training.learning_rate, decay_steps=training.epochs * steps_per_epoch
        )
    return _OPTIMIZERS[training.optimizer](learning_rate=rate)


class HistoryWriter(keras.callbacks.Callback):
    """Rewrites the history CSV at every epoch's end, so a long run can be watched with ``dvc plots``."""

    def __init__(self, path: str, rows: Sequence[dict[str, float]] = ()):
        super().__init__()
        self.path, self.rows = path, list(rows)
        if self.rows:  # resumed: the epochs done so far, even if no epoch is left to run
            self.write()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.rows.append({"epoch": epoch + 1, **{name: float(value) for name, value in (logs or {}).items()}})
        self.write()

    def write(self) -> None:
        columns = [column for column in HISTORY_COLUMNS if column in self.rows[0]]
        text = io.StringIO()
        text.write(",".join(columns) + "\n")
        for row in self.rows:
            text.write(",".join(str(row[c]) if c == "epoch" else repr(float(row[c])) for c in columns) + "\n")
        write_bytes(self.path, text.getvalue().encode())


class Progress(keras.callbacks.Callback):
    """One line per epoch: ``mnist epoch 3/10: loss 0.0712, val_accuracy 0.9840 (14 s; about 1 min 38 s left)``.

    The time left is the mean epoch time of this process so far times the epochs to go (a resumed run
    counts from where it resumed).
    """

    def __init__(self, name: str, epochs: int, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.name, self.epochs, self.clock = name, epochs, clock
        self.started: float | None = None
        self.done = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.started is None:
            self.started = self.clock()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.done += 1
        elapsed = self.clock() - (self.started or 0.0)
        per_epoch = elapsed / self.done
        figures = ", ".join(f"{name} {float(value):.4f}" for name, value in (logs or {}).items())
        left = self.epochs - (epoch + 1)
        timing = f"{duration(per_epoch)}" + (f"; about {duration(per_epoch * left)} left" if left else "")
        print(f"{self.name} epoch {epoch + 1}/{self.epochs}: {figures} ({timing})", flush=True)


class EpochLogger(keras.callbacks.Callback):
    """Per-epoch ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy`` to the MLflow run (step = epoch)."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        runs.log_history([{"epoch": epoch + 1, **(logs or {})}])


def steps_per_execution(steps_per_epoch: int, at_most: int) -> int:
    """The largest divisor of ``steps_per_epoch`` up to ``at_most``: Keras runs whole executions, so one
    that does not divide the epoch would take the next epoch's first batches into this one."""
    return max(d for d in range(1, min(steps_per_epoch, at_most) + 1) if steps_per_epoch % d == 0)


def compiled_model(task: Task, params: Params, data: TrainingData) -> keras.Model:
    """``task``'s network, seeded and compiled with its optimizer, loss and metric: ready to fit."""
    training = params.training(task.name)
    seed_everything(training.seed)
    model = task.build_model(params, data)
    steps = math.ceil(len(data.train) / training.batch_size)
    model.compile(
        optimizer=make_optimizer(training, steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution(steps, training.steps_per_execution),
    )
    return model


def epoch_order(seed: int, epoch: int, size: int) -> np.ndarray:
    """The shuffled order of epoch ``epoch``: a function of (seed, epoch) only, so a resumed run repeats it."""
    return np.random.default_rng([seed, epoch]).permutation(size)


def fingerprint(task: Task, params: Params) -> dict[str, str]:
    """What a checkpoint must match to be resumed from: params, input data, training code, versions.

    The code is every module the train stage's dvc.yaml entry depends on (pipeline.dependencies).
    """
    code = dependencies.code_files(f"train_{task.name}")
    return checkpoint.fingerprint(
        {**params.training(task.name).model_dump(), "numerics": params.numerics.model_dump()},
        [Path(path) for path in task.input_paths(params).values()],
        code,
        {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__},
    )


def resume_point(task: Task, params: Params, key: dict[str, str]) -> checkpoint.Checkpoint | None:
    """The checkpoint an interrupted run of this very configuration (``key``: its fingerprint) left, if any."""
    state = checkpoint.load(params.paths_of(task.name).checkpoint, key)
    if state is not None:
        print(
            f"resuming {task.name} training after epoch {state.epoch} "
            f"from {params.paths_of(task.name).checkpoint} (MLflow run {state.run_id})"
        )
    return state


def _restore(model: keras.Model, state: checkpoint.Checkpoint) -> None:
    model.optimizer.build(model.trainable_variables)
    for kind, variables, values in (
        ("model", model.variables, state.model),
        ("optimizer", model.optimizer.variables, state.optimizer),
    ):
        if len(variables) != len(values):
            raise PipelineError(f"the checkpoint holds {len(values)} {kind} variables, the model has {len(variables)}")
        for variable, value in zip(variables, values, strict=True):
            variable.assign(value)


def epoch_batches(examples: Examples, seed: int, epochs: range, batch_size: int) -> tf.data.Dataset:
    """The training batches of ``epochs``, one after the other, each epoch in its ``epoch_order``.

    One dataset for the whole run: ``fit`` is called once (a call per epoch cost seconds of set-up each),
    and no batch straddles two epochs.
    """
    orders = np.stack([epoch_order(seed, epoch, len(examples)) for epoch in epochs])
    x, y = tf.constant(examples.x), tf.constant(examples.y)
    batches = tf.data.Dataset.from_tensor_slices(orders).flat_map(
        lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
    )
    return batches.map(lambda index: (tf.gather(x, index), tf.gather(y, index))).prefetch(tf.data.AUTOTUNE)


class Checkpointer(keras.callbacks.Callback):
    """Writes the checkpoint at every epoch's end, after the history (listed before it) is written."""

    def __init__(self, path: str, fingerprint: dict[str, str], history: HistoryWriter, run_id: str | None):
        super().__init__()
        self.path, self.fingerprint, self.history, self.run_id = path, fingerprint, history, run_id

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        checkpoint.save(
            self.path,
            checkpoint.Checkpoint(
                epoch=epoch + 1,
                fingerprint=self.fingerprint,
                history=self.history.rows,
                run_id=self.run_id,
                model=[v.numpy() for v in self.model.variables],
                optimizer=[v.numpy() for v in self.model.optimizer.variables],
            ),
        )


def train(
    task: Task,
    params: Params,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    resume: checkpoint.Checkpoint | None = None,
    run_id: str | None = None,
    key: dict[str, str] | None = None,
) -> keras.Model:
    """Fit ``task``'s model as params.yaml says and return it, checkpointing after every epoch.

    ``key`` is the run's :func:`fingerprint` (computed here if not given). With ``resume``, training
    continues after the checkpoint's epoch with its weights, optimizer and random state: the result is
    the same, to the byte, as a run that was never interrupted. ``callbacks`` run after the epoch's
    history and checkpoint are written (a test's fault injection hooks in here).
    """
    training, paths = params.training(task.name), params.paths_of(task.name)
    data: TrainingData = task.load_training_data(params)
    model = compiled_model(task, params, data)
    history = HistoryWriter(paths.history, resume.history if resume else ())
    first_epoch = 0
    if resume is not None:
        _restore(model, resume)
        first_epoch = resume.epoch
    if first_epoch == training.epochs:
        return model
    saver = Checkpointer(paths.checkpoint, key or fingerprint(task, params), history, run_id)
    model.fit(
        epoch_batches(data.train, training.seed, range(first_epoch, training.epochs), training.batch_size),
        steps_per_epoch=math.ceil(len(data.train) / training.batch_size),
        initial_epoch=first_epoch,
        epochs=training.epochs,
        validation_data=(data.validation.x, data.validation.y) if data.validation is not None else None,
        validation_batch_size=INFERENCE_BATCH,
        shuffle=False,  # the batches come shuffled, reproducibly
        # Progress prints one line per epoch; in a terminal Keras adds its bar within the epoch.
        verbose=1 if sys.stdout.isatty() else 0,
        callbacks=[history, saver, Progress(task.name, training.epochs), *callbacks],
    )
    return model


def run(task: Task, params: Params, callbacks: Sequence[keras.callbacks.Callback] = ()) -> None:
    """The train stage's work: resume or start, fit, save the model, log the run, drop the checkpoint.

    ``callbacks`` (none in the stage) are :func:`train`'s, after MLflow's per-epoch logger.
    """
    paths = params.paths_of(task.name)
    key = fingerprint(task, params)
    resume = resume_point(task, params, key)
    with runs.training_run(task, params, resumes=resume.run_id if resume else None) as run_id:
        if resume is not None:
            runs.log_resumed(resume.history, resume.epoch)
        model = train(task, params, [EpochLogger(), *callbacks], resume, run_id, key)
        save_model(model, paths.model)
        runs.log_trained_model(task, params, Path(paths.model), Path(paths.history), task.extra_artifacts(params))
        # Bytes evaluated before: DVC will skip the evaluate stage, so its metrics come from that evaluation.
        reuse.carry_evaluation(task, params, run_id)
    checkpoint.clear(paths.checkpoint)
