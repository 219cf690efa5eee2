"""Saving a trained model so that equal weights give equal bytes, and loading it back safely."""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import keras

import pipeline.model.network  # noqa: F401 - registers the slicing layers a saved model names
from pipeline.errors import PipelineError
from pipeline.files import naming_storage_errors, write_bytes

# Keras writes the save time into metadata.json and every zip entry, and Python object ids
# (memory addresses) into config.json as `shared_object_id`; all are pinned or renumbered so that the
# archive's bytes depend on the model only and `dvc repro -f` leaves dvc.lock unchanged.
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_FIXED_DATE_SAVED = "1980-01-01@00:00:00"


class ModelError(PipelineError):
    """A model file is missing or cannot be loaded safely."""


def save_model(model: keras.Model, path: str | Path) -> None:
    """``model`` as a .keras archive with no timestamp in it, written atomically."""
    with tempfile.TemporaryDirectory() as scratch:
        saved = os.path.join(scratch, "model.keras")
        with naming_storage_errors(Path(path)):
            model.save(saved)
        write_bytes(path, _without_timestamps(Path(saved).read_bytes()))


def _without_timestamps(archive: bytes) -> bytes:
    output = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as source, zipfile.ZipFile(output, "w") as target:
        for entry in source.infolist():
            content = source.read(entry)
            if entry.filename == "metadata.json":
                metadata = json.loads(content)
                metadata["date_saved"] = _FIXED_DATE_SAVED
                content = json.dumps(metadata, sort_keys=True).encode()
            elif entry.filename == "config.json":
                content = json.dumps(_renumber_shared_objects(json.loads(content), {})).encode()
            pinned = zipfile.ZipInfo(entry.filename, date_time=_FIXED_ZIP_TIME)
            pinned.compress_type, pinned.external_attr = entry.compress_type, entry.external_attr
            target.writestr(pinned, content)
    return output.getvalue()


def _renumber_shared_objects(value: Any, numbers: dict[int, int]) -> Any:
    """Replace each ``shared_object_id`` by its order of first appearance: same sharing, stable bytes."""
    if isinstance(value, dict):
        renumbered = {key: _renumber_shared_objects(item, numbers) for key, item in value.items()}
        if "shared_object_id" in value:
            renumbered["shared_object_id"] = numbers.setdefault(value["shared_object_id"], len(numbers))
        return renumbered
    if isinstance(value, list):
        return [_renumber_shared_objects(item, numbers) for item in value]
    return value


def require_model(path: str | Path) -> None:
    """Fails with one line when there is no trained model at ``path``."""
    if not Path(path).is_file():
        raise ModelError(f"{path}: no trained model there (run `dvc repro` first)")


def load_model(path: str | Path) -> keras.Model:
    """A trained model; ``safe_mode`` refuses archives that would run arbitrary code (Lambda layers)."""
    require_model(path)
    try:
        return keras.models.load_model(path, safe_mode=True)
    except ValueError as error:
        raise ModelError(f"{path}: refused to load: {str(error).splitlines()[0]}") from None
