"""MLflow tracking: one run per trained model with params, curves, test metrics, model and provenance."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import mlflow.artifacts
import mlflow.models
import pytest
from conftest import Route
from mlflow.tracking import MlflowClient

from pipeline.tracking.provenance import flatten
from pipeline.tracking.store import project_root, tracking_uri


def test_project_root_from_inside_a_dvc_experiment(tmp_path):
    temporary = tmp_path / "project" / ".dvc" / "tmp" / "exps" / "tmpabc123"
    assert project_root({"DVC_ROOT": str(temporary)}) == tmp_path / "project"
    assert project_root({"DVC_ROOT": str(tmp_path / "project")}) == tmp_path / "project"


def test_tracking_uri_defaults_to_sqlite_at_the_root_and_can_be_overridden(tmp_path):
    assert tracking_uri({"DVC_ROOT": str(tmp_path)}) == f"sqlite:///{tmp_path}/mlflow.db"
    assert tracking_uri({"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}) == "http://127.0.0.1:5000"


def test_an_experiment_made_before_its_tags_existed_gets_them(tmp_path, store_uri):
    from pipeline.tracking.store import experiment_id
    from pipeline.tracking.tags import experiment_tags

    uri = store_uri
    older = MlflowClient(uri).create_experiment("fable", artifact_location=(tmp_path / "mlruns").as_uri())
    environ = {"MLFLOW_TRACKING_URI": uri}
    assert experiment_id("fable", environ) == older
    tags = MlflowClient(uri).get_experiment(older).tags
    assert {key: tags.get(key) for key in experiment_tags("fable")} == experiment_tags("fable")
    created = experiment_id("mnist", environ)
    assert MlflowClient(uri).get_experiment(created).tags["mlflow.experimentKind"] == "custom_model_development"


def test_flatten_uses_params_yaml_key_names():
    assert flatten({"units": 8, "split": {"train_size": 5}, "mirrors": ["a", "b"]}, "mnist") == {
        "mnist.units": 8,
        "mnist.split.train_size": 5,
        "mnist.mirrors": '["a", "b"]',
    }


def test_one_run_per_model_with_everything(trained_project):
    params = trained_project.params()
    for name in ("mnist", "fable"):
        (run,) = trained_project.runs(name)
        assert run.info.status == "FINISHED"
        client = MlflowClient()
        # params: the model's and its data's params.yaml values, under the same names
        assert run.data.params[f"{name}.units"] == str(params[name]["units"])
        assert run.data.params[f"{name}.epochs"] == "2"
        # per-epoch curves
        for metric in ("loss", "accuracy") + (("val_loss", "val_accuracy") if name == "mnist" else ()):
            history = client.get_metric_history(run.info.run_id, metric)
            assert [point.step for point in history] == [1, 2], metric
        # evaluation metrics, equal to what DVC tracks
        metrics_file = json.loads((trained_project.root / f"metrics/{name}.json").read_text())
        key = "test_accuracy" if name == "mnist" else "accuracy"
        assert run.data.metrics["test_accuracy"] == pytest.approx(metrics_file[key])
        # provenance
        tags = run.data.tags
        commit = trained_project.run("git", "rev-parse", "HEAD").stdout.strip()
        assert tags["mlflow.source.git.commit"] == commit and tags["git.dirty"] == "false"
        assert tags["restore"] == f"git checkout {commit} && dvc checkout"
        assert len(tags["params.sha256"]) == 64
        assert any(tag.startswith("data.") and tag.endswith(".sha256") for tag in tags)
        assert "dvc checkout" in tags["mlflow.note.content"]
        # named for what made it: a `dvc repro` in the workspace, the model and the short commit
        assert run.info.run_name == f"{name}-{commit[:7]}"
        # a model-training experiment (MLflow 3's UI opens its GenAI view without it), described
        experiment = client.get_experiment(run.info.experiment_id).tags
        assert experiment["mlflow.experimentKind"] == "custom_model_development"
        assert f"`{name}-<short commit>`" in experiment["mlflow.note.content"]
        assert "`champion` follows the highest `test_accuracy`" in experiment["mlflow.note.content"]
        # artifacts
        artifacts = {item.path for item in client.list_artifacts(run.info.run_id, "plots")}
        assert "plots/training_curves.png" in artifacts
        reports = {item.path for item in client.list_artifacts(run.info.run_id, "reports")}
        assert f"reports/{name}_history.csv" in reports
    fable_run = trained_project.runs("fable")[0]
    fable_reports = {i.path for i in MlflowClient().list_artifacts(fable_run.info.run_id, "reports")}
    assert {"reports/fable.json", "reports/fable_story.txt"} <= fable_reports
    mnist_run = trained_project.runs("mnist")[0]
    assert "plots/confusion_matrix.png" in {
        i.path for i in MlflowClient().list_artifacts(mnist_run.info.run_id, "plots")
    }


def test_logged_model_holds_the_dvc_model_the_package_and_a_signature(trained_project):
    (run,) = trained_project.runs("mnist")
    (logged,) = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert logged.source_run_id == run.info.run_id
    info = mlflow.models.get_model_info(f"models:/{logged.model_id}")
    assert info.signature.inputs.to_dict() == [
        {"type": "tensor", "tensor-spec": {"dtype": "uint8", "shape": (-1, 28, 28)}}
    ]
    assert [column["name"] for column in info.signature.outputs.to_dict()] == ["digit", "probabilities"]
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{logged.model_id}"))
    assert (local / "artifacts" / "mnist.keras").read_bytes() == (
        trained_project.root / "models/mnist.keras"
    ).read_bytes()
    assert (local / "code" / "pipeline" / "serving" / "pyfunc.py").is_file()  # the code travels with the model
    assert (
        json.loads((local / "serving_input_example.json").read_text())["inputs"][0][0] == [0] * 28
    )  # the first row of a real test image


def test_rerun_without_changes_adds_no_run_and_a_param_edit_adds_one(trained_copy):
    trained_copy.run("git", "add", "-A")
    trained_copy.run("git", "commit", "-qm", "trained")
    assert "Running stage" not in trained_copy.dvc("repro").stdout
    assert len(trained_copy.runs("mnist")) == 1 and len(trained_copy.runs("fable")) == 1
    trained_copy.edit_params(lambda raw: raw["fable"].__setitem__("units", 24))
    trained_copy.dvc("repro")
    assert len(trained_copy.runs("mnist")) == 1
    fable_runs = trained_copy.runs("fable")
    assert len(fable_runs) == 2
    newest = max(fable_runs, key=lambda run: run.info.start_time)
    assert newest.data.params["fable.units"] == "24" and "test_accuracy" in newest.data.metrics
    assert newest.data.tags["git.dirty"] == "true"  # params.yaml differs from the commit
    # DVC compares the same metrics against the last commit.
    diff = json.loads(trained_copy.dvc("metrics", "diff", "--json").stdout)
    assert "metrics/fable.json" in diff and "metrics/mnist.json" not in diff


def test_a_failing_stage_leaves_its_run_failed(trained_copy):
    # The history cannot be written under a file: training fails after its run has started.
    trained_copy.edit_params(lambda raw: raw["paths"]["fable"].__setitem__("history", "params.yaml/history.csv"))
    result = trained_copy.python("-m", "pipeline.stages.train", "fable", check=False)
    assert result.returncode != 0
    newest = max(trained_copy.runs("fable"), key=lambda run: run.info.start_time)
    assert newest.info.status == "FAILED"


def test_an_interrupted_stage_leaves_its_run_killed(trained_copy):
    trained_copy.edit_params(lambda raw: raw["fable"].__setitem__("epochs", 100000))
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.stages.train", "fable"],
        cwd=trained_copy.root,
        env=trained_copy.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for line in process.stdout:  # wait until it is training (one epoch logged)
            if line.startswith("fable epoch 2/"):
                break
        process.send_signal(signal.SIGTERM)  # what DVC sends its stage on Ctrl-C
        rest, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    newest = max(trained_copy.runs("fable"), key=lambda run: run.info.start_time)
    assert newest.info.status == "KILLED", rest
    assert process.returncode != 0


def test_a_signal_inside_a_store_call_waits_for_it_then_ends_the_run_killed(store_uri):
    """SIGTERM raised while SQLite executes a metric's INSERT: raised there, it left the write lock held and
    ending the run failed "database is locked" (the run stayed RUNNING); it is raised once the call returns."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from pipeline.tracking.runs import run_status_on_exit

    def signal_inside(conn, cursor, statement, *args):
        if statement.startswith("INSERT INTO metrics"):
            signal.raise_signal(signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    mlflow.set_tracking_uri(store_uri)
    mlflow.set_experiment(experiment_id="0")
    run = mlflow.start_run()
    event.listen(Engine, "before_cursor_execute", signal_inside)
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt), run_status_on_exit():
            mlflow.log_metric("loss", 0.5)
            time.sleep(30)  # the deferred interrupt cuts this short
    finally:
        event.remove(Engine, "before_cursor_execute", signal_inside)
        mlflow.set_tracking_uri("")
    assert time.monotonic() - started < 20
    ended = MlflowClient(store_uri).get_run(run.info.run_id)
    assert ended.info.status == "KILLED"
    assert ended.data.metrics == {"loss": 0.5}
    assert mlflow.active_run() is None
    assert signal.getsignal(signal.SIGTERM) is before


def test_artifacts_stay_beside_the_store(trained_project):
    """In mlruns/ beside the project's mlflow.db, where `dvc repro` made the store (a copy's store keeps them)."""
    made_in = trained_project.store_made_in or trained_project.root
    store = MlflowClient(f"sqlite:///{trained_project.root}/mlflow.db")
    locations = {e.name: e.artifact_location for e in store.search_experiments() if e.name in ("mnist", "fable")}
    assert locations == {name: (made_in / "mlruns" / name).as_uri() for name in ("mnist", "fable")}


def test_an_unreachable_tracking_server_fails_at_once_in_one_line(http_server):
    import socket

    from pipeline.tracking.store import TrackingError, require_server

    http_server.routes = {"/health": Route(b"OK")}
    require_server(http_server.base_url)  # answers
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    started = time.monotonic()
    with pytest.raises(TrackingError, match=rf"^MLFLOW_TRACKING_URI={closed}: no MLflow server answers \(.*refused"):
        require_server(closed)
    assert time.monotonic() - started < 5
    require_server("sqlite:///mlflow.db")  # a local store needs no server


def test_a_refused_login_fails_at_once_naming_the_user(http_server):
    from pipeline.tracking.store import TrackingError, require_server

    http_server.routes = {
        "/health": Route(b"OK"),
        "/api/2.0/mlflow/experiments/search?max_results=1": Route(b"", status=401),
    }
    url = http_server.base_url
    with pytest.raises(TrackingError, match=rf"^authentication failed for user trainer at {url} "):
        require_server(url, environ={"MLFLOW_TRACKING_USERNAME": "trainer", "MLFLOW_TRACKING_PASSWORD": "wrong"})
    with pytest.raises(
        TrackingError, match=rf"^the MLflow server at {url} requires a login: set MLFLOW_TRACKING_USERNAME"
    ):
        require_server(url, environ={})
    http_server.routes["/api/2.0/mlflow/experiments/search?max_results=1"] = Route(b"{}")
    require_server(url, environ={"MLFLOW_TRACKING_USERNAME": "trainer", "MLFLOW_TRACKING_PASSWORD": "right"})
