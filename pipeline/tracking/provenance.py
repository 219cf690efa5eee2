"""What a run records about where it comes from: params under params.yaml's names, git commit and dirtiness,
the DVC experiment, the digests of its input data, the datasets it read, and which process runs it."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow

from pipeline.files import file_digest, json_digest
from pipeline.tracking.tags import HOST_TAG, PID_TAG

if TYPE_CHECKING:
    from pipeline.config import Params
    from pipeline.tasks.base import Dataset

DIGEST_LENGTH = 36  # MLflow stores a dataset digest in 36 characters: the first 36 hex digits of the sha256
# Code and configuration whose changes make a run's commit not the whole story ("dirty").
_SOURCE_PATHS = ("pipeline", "params.yaml", "dvc.yaml", "requirements.txt")


def flatten(value: Any, prefix: str) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: params.yaml's own dotted key names."""
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}.{key}"))
        return flat
    return {prefix: json.dumps(value) if isinstance(value, (list, tuple)) else value}


def git(*arguments: str) -> str | None:
    # In the workspace the stage runs in: a queued experiment's own checkout, not the project's.
    workspace = os.environ.get("DVC_ROOT") or os.getcwd()
    try:
        result = subprocess.run(["git", *arguments], capture_output=True, text=True, timeout=30, cwd=workspace)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def provenance_tags(
    params_flat: Mapping[str, Any], input_files: Mapping[str, Path], environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """Git commit and dirtiness, the DVC experiment, input data digests and the params hash."""
    tags: dict[str, str] = {}
    commit = git("rev-parse", "HEAD")
    if commit:
        tags["mlflow.source.git.commit"] = commit
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", *_SOURCE_PATHS)
        tags["git.dirty"] = str(bool(dirty)).lower()
    experiment = environ.get("DVC_EXP_NAME")
    if experiment:
        tags["dvc.exp_name"] = experiment
        tags["dvc.baseline_rev"] = environ.get("DVC_EXP_BASELINE_REV", "")
        tags["restore"] = f"dvc exp apply {experiment}"
    elif commit:
        tags["restore"] = f"git checkout {commit} && dvc checkout"
    for name, path in input_files.items():
        tags[f"data.{name}.sha256"] = file_digest(path)
    tags["params.sha256"] = json_digest(dict(params_flat))
    return tags


def run_params(params: Params, task: str) -> dict[str, Any]:
    """The model's and its data's params.yaml values, under params.yaml's dotted names."""
    return {
        **flatten(params.training(task).model_dump(), task),
        **flatten(params.numerics.model_dump(), "numerics"),
        **flatten(getattr(params.data, task).model_dump(), f"data.{task}"),
    }


def owner_tags() -> dict[str, str]:
    """Which process on which host has the run open: to close the runs a killed process left RUNNING."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def dataset_digest(files: Sequence[str | Path]) -> str:
    """The sha256 of the files' bytes one after the other (of one file: what ``sha256sum`` prints), cut to
    the :data:`DIGEST_LENGTH` characters MLflow keeps."""
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as handle:
            hashlib.file_digest(handle, lambda: digest)  # one digest over all the files, in order
    return digest.hexdigest()[:DIGEST_LENGTH]


def log_datasets(datasets: Sequence[Dataset]) -> Any:
    """Each dataset as an input of the active run (the runs table's Dataset column); the last one returned."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source  # noqa: PLC0415
    from mlflow.data.meta_dataset import MetaDataset  # noqa: PLC0415

    logged = None
    for dataset in datasets:
        logged = MetaDataset(
            resolve_dataset_source(dataset.source), name=dataset.name, digest=dataset_digest(dataset.files)
        )
        mlflow.log_input(logged, context=dataset.context)
    return logged
