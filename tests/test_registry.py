"""The model registry: every evaluated training a version with its test metrics and provenance; aliases
``latest`` (the newest) and ``champion`` (the best test accuracy, moved only when beaten)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pytest
from conftest import clone_project
from mlflow.tracking import MlflowClient

from pipeline.config import load_params
from pipeline.tracking import provenance, registry, reuse, tags
from pipeline.tracking.store import TrackingError


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


@pytest.fixture
def store(store_uri):
    mlflow.set_tracking_uri(store_uri)
    # The fluent API keeps the last experiment set in this process (another test's, in another store): the
    # store's own default experiment instead.
    mlflow.set_experiment(experiment_id="0")
    yield MlflowClient()
    mlflow.set_tracking_uri("")


def evaluated_run(accuracy: float, commit: str = "c0ffee") -> str:
    """A finished run with a (tiny) logged model and the tags and test metrics the pipeline gives one."""
    with mlflow.start_run(
        tags={
            "mlflow.source.git.commit": commit,
            "params.sha256": "p" * 64,
            tags.MODEL_DIGEST_TAG: f"model-{accuracy}",
        }
    ) as run:
        mlflow.pyfunc.log_model(name="model", python_model=Echo(), pip_requirements=[])
        mlflow.log_metrics({"test_accuracy": accuracy, "test_loss": 1 - accuracy})
        mlflow.set_tags(
            {
                tags.TEST_METRICS_TAG: json.dumps(["test_accuracy", "test_loss"]),
                tags.EVALUATED_BY_TAG: run.info.run_id,
            }
        )
    return run.info.run_id


def aliases(client: MlflowClient, name: str = "mnist") -> dict[str, str]:
    """The versions ``@champion`` and ``@latest`` resolve to (MLflow reserves ``latest``: the newest version)."""
    stored = {
        **client.get_registered_model(name).aliases,
        "latest": client.get_model_version_by_alias(name, "latest").version,
    }
    return {alias: str(version) for alias, version in stored.items()}


def test_champion_moves_only_when_beaten_and_latest_follows_the_newest(store):
    first = registry.register("mnist", evaluated_run(0.95))
    assert first.version == 1 and aliases(store) == {"champion": "1", "latest": "1"}
    registry.register("mnist", evaluated_run(0.90))  # worse
    assert aliases(store) == {"champion": "1", "latest": "2"}
    registry.register("mnist", evaluated_run(0.95))  # a tie keeps the older
    assert aliases(store) == {"champion": "1", "latest": "3"}
    registry.register("mnist", evaluated_run(0.96))  # better
    assert aliases(store) == {"champion": "4", "latest": "4"}


def test_a_version_carries_its_test_metrics_and_provenance(store):
    run_id = evaluated_run(0.97, commit="abc123")
    version = registry.register("fable", run_id)
    stored = store.get_model_version("fable", version.version)
    assert stored.run_id == run_id and stored.source.startswith("models:/m-")
    assert float(stored.tags["test_accuracy"]) == 0.97 and float(stored.tags["test_loss"]) == pytest.approx(0.03)
    assert stored.tags["git_commit"] == "abc123" and stored.tags["params_sha256"] == "p" * 64
    assert stored.tags["dvc_experiment"] == "" and stored.tags["test_metrics_from"] == run_id
    # Loading the registered model goes through the alias.
    assert list(mlflow.pyfunc.load_model("models:/fable@champion").predict(["x"])) == ["x"]


def test_registering_a_run_again_updates_its_version_instead_of_adding_one(store):
    run_id = evaluated_run(0.9)
    registry.register("mnist", run_id)
    store.log_metric(run_id, "test_accuracy", 0.91)
    again = registry.register("mnist", run_id)
    assert again.version == 1 and len(store.search_model_versions("name = 'mnist'")) == 1
    assert again.tags["test_accuracy"] == "0.91"


def test_a_run_without_a_model_is_refused_in_one_line(store):
    with mlflow.start_run() as run:
        pass
    with pytest.raises(TrackingError, match=f"MLflow run {run.info.run_id} has no logged model"):
        registry.register("mnist", run.info.run_id)


# --- the real pipeline -----------------------------------------------------------------------------------


def versions(project, name: str) -> list:
    mlflow.set_tracking_uri(f"sqlite:///{project.root}/mlflow.db")
    return sorted(MlflowClient().search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))


def test_repro_registers_both_models_with_metrics_datasets_and_system_metrics(trained_project):
    for name in ("mnist", "fable"):
        (run,) = trained_project.runs(name)
        (version,) = versions(trained_project, name)
        metrics = json.loads((trained_project.root / f"metrics/{name}.json").read_text())
        assert float(version.tags["test_accuracy"]) == metrics["accuracy" if name == "fable" else "test_accuracy"]
        assert version.run_id == run.info.run_id and version.tags["test_metrics_from"] == run.info.run_id
        assert version.tags["git_commit"] == run.data.tags["mlflow.source.git.commit"]
        assert version.tags["params_sha256"] == run.data.tags["params.sha256"]
        assert aliases(MlflowClient(), name) == {"champion": "1", "latest": "1"}
        # The test metrics belong to the logged model too, measured on the test data where there is some.
        logged = MlflowClient().get_logged_model(run.outputs.model_outputs[0].model_id)
        assert {metric.key for metric in logged.metrics} >= {"test_accuracy", "test_loss"}
        # Lineage: the datasets with their digest and source; CPU and memory while training.
        inputs = {dataset.dataset.name: dataset for dataset in run.inputs.dataset_inputs}
        assert any(key.startswith("system/cpu_utilization") for key in run.data.metrics)
        assert any(key.startswith("system/system_memory_usage") for key in run.data.metrics)
        if name == "fable":
            assert set(inputs) == {"fable"}
            text = trained_project.root / "data/raw/fable.txt"
            assert inputs["fable"].dataset.digest == provenance.dataset_digest([text])
            assert json.loads(inputs["fable"].dataset.source)["url"] == trained_project.params()["data"]["fable"]["url"]
        else:
            assert set(inputs) == {"mnist-train", "mnist-validation", "mnist-test"}
            contexts = {
                name_: {tag.key: tag.value for tag in dataset.tags}["mlflow.data.context"]
                for name_, dataset in inputs.items()
            }
            assert contexts == {"mnist-train": "training", "mnist-validation": "validation", "mnist-test": "testing"}
            prepared = trained_project.root / "data/prepared/mnist"
            assert inputs["mnist-test"].dataset.digest == provenance.dataset_digest(
                [prepared / "x_test.npy", prepared / "y_test.npy"]
            )
            assert {metric.dataset_name for metric in logged.metrics if metric.key == "test_accuracy"} == {"mnist-test"}


def test_dataset_digest_is_the_sha256_of_the_bytes_cut_to_mlflows_length(tmp_path):
    (tmp_path / "a").write_bytes(b"hello ")
    (tmp_path / "b").write_bytes(b"world")
    (tmp_path / "ab").write_bytes(b"hello world")
    digest = provenance.dataset_digest([tmp_path / "a", tmp_path / "b"])
    assert digest == provenance.dataset_digest([tmp_path / "ab"])
    assert digest == "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"[:36]


def test_the_same_bytes_again_reuse_the_evaluation_and_the_champion_follows_the_rule(trained_copy):
    """Retraining gives the same bytes: DVC skips the evaluate stage, and the new run still carries the test
    metrics, saying whose; it ties with the champion, which stays. Then other params: a new version, the
    champion moving only if it is beaten."""
    project = trained_copy
    (first,) = project.runs("mnist")
    project.dvc("repro", "-f", "-s", "train_mnist")
    assert "Running stage 'evaluate_mnist'" not in project.dvc("repro").stdout  # DVC: the evaluation is up to date
    project.edit_params(lambda raw: raw["mnist"].update(learning_rate=raw["mnist"]["learning_rate"] * 2))
    project.dvc("repro")

    _, again, other = project.runs("mnist")
    assert again.info.status == "FINISHED"
    assert again.data.tags[tags.MODEL_DIGEST_TAG] == first.data.tags[tags.MODEL_DIGEST_TAG]
    assert again.data.tags[tags.EVALUATED_BY_TAG] == first.info.run_id
    assert again.data.metrics["test_accuracy"] == first.data.metrics["test_accuracy"]
    assert [v.run_id for v in versions(project, "mnist")] == [first.info.run_id, again.info.run_id, other.info.run_id]
    beaten = other.data.metrics["test_accuracy"] > first.data.metrics["test_accuracy"]
    assert aliases(MlflowClient()) == {"champion": "3" if beaten else "1", "latest": "3"}


def test_a_fresh_clone_registers_the_committed_evaluation(trained_copy, tmp_path):
    """A clone of a commit with dvc.lock and metrics/ (what `make repro` in a fresh clone of this project
    meets): its training ends on the committed bytes, DVC skips both evaluate stages, and both runs still
    get the committed test metrics, say so, and are registered with a champion."""
    trained_copy.run("git", "add", "-A")
    trained_copy.run("git", "commit", "-qm", "trained: dvc.lock and metrics")
    clone = clone_project(trained_copy.root, tmp_path / "clone", trained_copy.env)
    output = clone.dvc("repro").stdout
    assert "Running stage 'train_mnist'" in output and "Running stage 'evaluate_mnist'" not in output
    assert clone.run("git", "status", "--porcelain").stdout == ""  # the committed lock, reproduced
    commit = clone.run("git", "rev-parse", "--short", "HEAD").stdout.strip()
    for name in ("mnist", "fable"):
        (run,) = clone.runs(name)
        metrics = json.loads((clone.root / f"metrics/{name}.json").read_text())
        assert run.data.metrics["test_accuracy"] == metrics["accuracy" if name == "fable" else "test_accuracy"]
        assert run.data.tags[tags.EVALUATED_BY_TAG] == f"dvc.lock stage evaluate_{name} at git commit {commit}"
        (version,) = versions(clone, name)
        assert version.run_id == run.info.run_id
        assert aliases(MlflowClient(), name) == {"champion": "1", "latest": "1"}


def test_an_evaluation_of_other_bytes_is_not_taken_from_the_lock(trained_copy, monkeypatch):
    """The committed evaluation counts only for the exact model and metrics bytes dvc.lock records."""
    monkeypatch.chdir(trained_copy.root)
    paths = load_params().paths_of("mnist")
    stage, metrics = reuse.committed_evaluation(paths)
    assert stage == "evaluate_mnist" and metrics == json.loads(Path(paths.metrics).read_text())
    assert reuse.committed_evaluation(paths, Path("no.lock")) is None
    Path(paths.metrics).write_text(Path(paths.metrics).read_text() + " ")
    assert reuse.committed_evaluation(paths) is None


def test_cli_reads_registered_models(trained_project, tmp_path):
    """predict and generate with --model answer as with the workspace model; a bad URI fails in one line."""
    import numpy as np
    from PIL import Image

    image = tmp_path / "digit.png"
    Image.fromarray(np.load(trained_project.root / "data/prepared/mnist/x_test.npy")[0]).save(image)
    workspace = trained_project.python("-m", "pipeline.predict", str(image)).stdout
    champion = ("--model", "models:/mnist@champion")
    registered = trained_project.python("-m", "pipeline.predict", str(image), *champion).stdout
    assert workspace.strip() and registered.strip().splitlines()[-1] == workspace.strip().splitlines()[-1]

    story = trained_project.python("-m", "pipeline.generate").stdout.strip().splitlines()[-1].split()
    short = trained_project.python("-m", "pipeline.generate", "--model", "models:/fable@latest", "--words", "2")
    words = trained_project.params()["fable"]["n_input"] + 2
    assert short.stdout.strip().splitlines()[-1].split() == story[:words] and len(story) > words

    for arguments in (
        ("pipeline.predict", str(image), "--model", "models:/mnist@nobody"),
        ("pipeline.generate", "--model", "models:/mnist@champion"),
    ):
        failed = trained_project.python("-m", *arguments, check=False)
        assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr
        assert (
            failed.stderr.strip()
            .splitlines()[-1]
            .startswith(("predict: error: model models:/mnist@nobody", "generate: error: model models:/mnist@champion"))
        )
