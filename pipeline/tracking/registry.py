"""The model registry: every evaluated run becomes a version of the registered model named after its task
(``mnist``, ``fable``), tagged with its test metrics and provenance; alias ``champion`` on the best by test
accuracy, moved only when a new version beats it (a tie keeps the older); ``@latest``, the newest version,
MLflow resolves itself (a reserved alias name)."""

from __future__ import annotations

import json

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.tracking.store import TrackingError, store_lock
from pipeline.tracking.tags import EVALUATED_BY_TAG, MODEL_DIGEST_TAG, TEST_METRICS_TAG

CHAMPION = "champion"  # the registered models' alias of the best version (MLflow resolves @latest itself)

# A version's tags, from its run's: provenance (besides its test metrics).
_VERSION_TAGS = {
    "git_commit": "mlflow.source.git.commit",
    "dvc_experiment": "dvc.exp_name",
    "params_sha256": "params.sha256",
    "model_sha256": MODEL_DIGEST_TAG,
    "test_metrics_from": EVALUATED_BY_TAG,
}


def register(name: str, run_id: str) -> ModelVersion:
    """The model of run ``run_id`` as a version of registered model ``name`` (once: again only updates its
    tags), tagged with its test metrics, git commit, DVC experiment and params digest; aliases moved."""
    client = MlflowClient()
    run = client.get_run(run_id)
    model_ids = [output.model_id for output in (run.outputs.model_outputs if run.outputs else [])]
    if not model_ids:
        raise TrackingError(f"MLflow run {run_id} has no logged model to register as {name!r}")
    tags = {key: run.data.tags.get(tag, "") for key, tag in _VERSION_TAGS.items()}
    tags |= {
        metric: repr(run.data.metrics[metric])
        for metric in json.loads(run.data.tags.get(TEST_METRICS_TAG, "[]"))
        if metric in run.data.metrics
    }
    with store_lock():
        try:
            client.create_registered_model(name, description=f"The {name} models this pipeline trained and evaluated.")
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        if existing:
            version = existing[0]
            for key, value in tags.items():
                client.set_model_version_tag(name, version.version, key, value)
            version = client.get_model_version(name, version.version)
        else:
            version = client.create_model_version(
                name,
                source=f"models:/{model_ids[-1]}",
                run_id=run_id,
                tags=tags,
                model_id=model_ids[-1],
                description=f"Trained and evaluated by `dvc repro`: MLflow run {run_id}.",
            )
        champion = _move_champion(client, name, version)
    print(
        f"registered model {name} version {version.version} (test_accuracy {tags.get('test_accuracy', '-')}); "
        f"{CHAMPION}: version {champion}"
    )
    return version


def _move_champion(client: MlflowClient, name: str, version: ModelVersion) -> str:
    """``champion`` to ``version`` if there is none or ``version`` has a higher test accuracy (a tie keeps the
    older); the champion's version number is returned. ``latest`` is MLflow's own: a reserved alias name that
    it resolves to the newest version (``models:/mnist@latest``), so it is never set here."""
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None
    if champion is None or _accuracy(version) > _accuracy(champion):
        client.set_registered_model_alias(name, CHAMPION, str(version.version))
        return str(version.version)
    return str(champion.version)


def _accuracy(version: ModelVersion) -> float:
    value = version.tags.get("test_accuracy")
    return float(value) if value else float("-inf")
