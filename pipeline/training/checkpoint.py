"""Resuming an interrupted training run exactly where its last complete epoch left it.

At the end of every epoch the train stage rewrites one checkpoint file per model (``paths.<model>.checkpoint``
in params.yaml): every model variable (weights and the random-number state of layers such as the
MNIST shift augmentation), every optimizer variable (its step count included, so the learning-rate
schedule continues), the number of epochs done, the history so far and the MLflow run that wrote it.
The shuffling order of an epoch is a pure function of (seed, epoch), so nothing else is needed for the
resumed run to produce the same bytes as one that never stopped.

The file is written atomically (a ``kill -9`` leaves the previous checkpoint or the new one, never half of
one) and stamped with the digests of everything that decides the result: the model's params, the digests
of its input data and of the code that trains it, and the TensorFlow and Keras versions. A checkpoint
with other digests is discarded with a line saying which of them changed. The train stage deletes the file
once the model is saved and logged.

It is deliberately not a DVC output: DVC deletes a stage's outputs before it reruns the stage, and an
output that exists only after a failure would make every fresh clone look out of date. Like a
``persist: true`` output it survives a failed run; unlike one, nothing of it remains after a good run.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.files import file_digest, json_digest, write_bytes

FORMAT = 1
_META = "meta.json"


@dataclass(frozen=True)
class Checkpoint:
    epoch: int  # epochs complete
    fingerprint: dict[str, str]
    model: list[np.ndarray]
    optimizer: list[np.ndarray]
    history: list[dict[str, float]] = field(default_factory=list)
    run_id: str | None = None  # the MLflow run of the attempt that wrote it


def fingerprint(
    params: Mapping[str, Any], inputs: Sequence[Path], code: Sequence[Path], versions: Mapping[str, str]
) -> dict[str, str]:
    """sha256 digests of what decides a run's result: its params, input data, code and library versions."""
    return {
        "params": json_digest(params),
        "data": _files_digest(inputs),
        "code": _files_digest(code),
        "library versions": json_digest(versions),
    }


def _files_digest(paths: Sequence[Path]) -> str:
    """By content and name, wherever the workspace is (DVC runs queued experiments in a copy)."""
    listing = "".join(f"{path.name}\0{file_digest(path)}\n" for path in paths)
    return hashlib.sha256(listing.encode()).hexdigest()


def save(path: str | Path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` to ``path`` atomically: an .npz archive of plain arrays, no pickles."""
    meta = {
        "format": FORMAT,
        "epoch": checkpoint.epoch,
        "fingerprint": checkpoint.fingerprint,
        "history": checkpoint.history,
        "run_id": checkpoint.run_id,
        "model_variables": len(checkpoint.model),
        "optimizer_variables": len(checkpoint.optimizer),
    }
    arrays = {f"model_{index:04d}": value for index, value in enumerate(checkpoint.model)}
    arrays |= {f"optimizer_{index:04d}": value for index, value in enumerate(checkpoint.optimizer)}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr(_META, json.dumps(meta, sort_keys=True))
    write_bytes(path, buffer.getvalue())


def load(path: str | Path, expected_fingerprint: dict[str, str]) -> Checkpoint | None:
    """The checkpoint at ``path`` if there is one to resume from; else None, with a line saying why."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(archive.read(_META))
        with np.load(path, allow_pickle=False) as arrays:
            model = [arrays[f"model_{index:04d}"] for index in range(meta["model_variables"])]
            optimizer = [arrays[f"optimizer_{index:04d}"] for index in range(meta["optimizer_variables"])]
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as error:
        print(f"{path}: discarding the checkpoint, it cannot be read ({type(error).__name__}: {error})")
        return None
    stored = meta.get("fingerprint") if meta.get("format") == FORMAT else None
    changed = [
        part
        for part, digest in expected_fingerprint.items()
        if not isinstance(stored, dict) or stored.get(part) != digest
    ]
    if changed:
        print(
            f"{path}: discarding the checkpoint of epoch {meta.get('epoch')}, it was written with different "
            f"{', '.join(changed)}; training starts over"
        )
        return None
    return Checkpoint(
        epoch=int(meta["epoch"]),
        fingerprint=meta["fingerprint"],
        model=model,
        optimizer=optimizer,
        history=list(meta["history"]),
        run_id=meta.get("run_id"),
    )


def clear(path: str | Path) -> None:
    Path(path).unlink(missing_ok=True)
