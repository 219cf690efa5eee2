"""The training loop's small pieces: progress lines with the time left, whole executions per epoch."""

from __future__ import annotations

from pipeline.training.loop import Progress, steps_per_execution


def test_each_epoch_prints_its_figures_and_the_time_left(capsys):
    ticks = iter([100.0, 112.0, 126.0, 138.0])  # epochs of 12, 14 and 12 s
    progress = Progress("mnist", epochs=5, clock=lambda: next(ticks))
    progress.on_epoch_begin(2)  # resumed after epoch 2: the time left counts from here
    progress.on_epoch_end(2, {"loss": 0.25, "val_accuracy": 0.98125})
    progress.on_epoch_begin(3)
    progress.on_epoch_end(3, {"loss": 0.125})
    progress.on_epoch_begin(4)
    progress.on_epoch_end(4, {"loss": 0.1})
    assert capsys.readouterr().out.splitlines() == [
        "mnist epoch 3/5: loss 0.2500, val_accuracy 0.9812 (12 s; about 24 s left)",
        "mnist epoch 4/5: loss 0.1250 (13 s; about 13 s left)",
        "mnist epoch 5/5: loss 0.1000 (13 s)",
    ]


def test_executions_divide_the_epoch():
    assert steps_per_execution(215, 64) == 43  # the default MNIST: 55,000 images in batches of 256
    assert steps_per_execution(5, 64) == 5 and steps_per_execution(7, 3) == 1
