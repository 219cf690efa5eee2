"""Pictures for MLflow's artifact view: training curves and the confusion matrix (DVC draws its own)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no backend, no display, no global figure list


def training_curves(history_csv: Path, title: str) -> Figure:
    """Loss and accuracy per epoch, training and (when there is one) validation."""
    with open(history_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    epochs = [int(row["epoch"]) for row in rows]
    figure = Figure(figsize=(10, 4))
    axes = figure.subplots(1, 2)
    for axis, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, label in (("", "train"), ("val_", "validation")):
            if prefix + metric in rows[0]:
                axis.plot(epochs, [float(row[prefix + metric]) for row in rows], marker=".", label=label)
        axis.set(xlabel="epoch", ylabel=metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def confusion_matrix(actual: Sequence[int], predicted: Sequence[int], classes: int) -> Figure:
    counts = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(actual), np.asarray(predicted)), 1)
    figure = Figure(figsize=(6, 5.5))
    axis = figure.subplots()
    image = axis.imshow(np.log1p(counts), cmap="Blues")
    for (row, column), count in np.ndenumerate(counts):
        if count:
            axis.text(
                column,
                row,
                str(count),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if count > counts.max() / 4 else "black",
            )
    axis.set(
        xlabel="predicted",
        ylabel="actual",
        xticks=range(classes),
        yticks=range(classes),
        title=f"Confusion matrix ({counts.trace()}/{counts.sum()} correct)",
    )
    figure.colorbar(image, ax=axis, label="log(1 + count)")
    figure.tight_layout()
    return figure
