"""Models that travel: each run's pyfunc model loads where the project cannot be imported, and answers
as the pipeline's evaluation did."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest
from conftest import free_port, wait_until_up

from pipeline.serving.pyfunc import ServingError, _column, images_array


def test_images_arrive_as_arrays_lists_or_one_image():
    image = np.arange(28 * 28).reshape(28, 28) % 256
    assert images_array(image).shape == (1, 28, 28)
    assert images_array(image[None].tolist()).dtype == np.uint8
    np.testing.assert_array_equal(images_array(pd.DataFrame({"image": [image, image]})), np.stack([image, image]))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.zeros((2, 28, 27)), r"shape \(N, 28, 28\), got an array of shape \(2, 28, 27\)"),
        (np.full((1, 28, 28), 256), r"pixel values must be 0-255, got 256\.\.256"),
    ],
)
def test_bad_images_are_refused_in_one_line(value, message):
    with pytest.raises(ServingError, match=message):
        images_array(value)


def test_prompts_arrive_as_a_column_a_list_or_one_string():
    assert _column(pd.DataFrame({"prompt": ["a b c", "d e f"]}), "prompt") == ["a b c", "d e f"]
    assert _column(["a b c"], "prompt") == ["a b c"] and _column("a b c", "prompt") == ["a b c"]


# Run in a fresh interpreter, in a directory outside the project, with nothing of it on sys.path.
LOAD_ELSEWHERE = textwrap.dedent("""
    import importlib.util, json, sys
    import numpy as np, mlflow, mlflow.pyfunc
    assert importlib.util.find_spec("pipeline") is None, "the project is importable here"
    mlflow.set_tracking_uri(sys.argv[1])
    (run,) = mlflow.search_runs(experiment_names=[sys.argv[2]], output_format="list")
    (logged,) = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    model = mlflow.pyfunc.load_model(f"models:/{logged.model_id}")
    if sys.argv[2] == "mnist":
        answer = model.predict(np.load(sys.argv[3]))
        sums = [float(sum(p)) for p in answer["probabilities"]]
        print(json.dumps({"digits": answer["digit"].tolist(), "sums": sums}))
    else:
        print(json.dumps({"stories": model.predict(sys.argv[3:])["story"].tolist()}))
        try:
            model.predict(["long ago zebra"])
        except Exception as error:
            print(json.dumps({"error": str(error)}))
""")


def load_elsewhere(project, tmp_path, *arguments: str) -> list[dict]:
    result = subprocess.run(
        [sys.executable, "-c", LOAD_ELSEWHERE, f"sqlite:///{project.root}/mlflow.db", *arguments],
        cwd=tmp_path,
        env={k: v for k, v in project.env.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_mnist_model_loads_without_the_project_and_predicts_as_the_evaluation(trained_project, tmp_path):
    images = trained_project.root / "data/prepared/mnist/x_test.npy"
    (answer,) = load_elsewhere(trained_project, tmp_path, "mnist", str(images))
    confusion = (trained_project.root / "metrics/mnist_confusion.csv").read_text().splitlines()[1:]
    assert answer["digits"] == [int(line.split(",")[1]) for line in confusion]  # the evaluate stage's predictions
    assert all(abs(total - 1) < 1e-6 for total in answer["sums"])


@pytest.mark.slow
def test_fable_model_tells_the_story_and_names_unknown_words(trained_project, tmp_path):
    story = (trained_project.root / "metrics/fable_story.txt").read_text().split()
    answer, failure = load_elsewhere(trained_project, tmp_path, "fable", " ".join(story[:3]))
    assert answer["stories"] == [" ".join(story[3:])]  # the evaluate stage's story, after its prompt
    assert "'zebra' not in the model's vocabulary" in failure["error"]


def served(project, model_uri: str, body: dict) -> tuple[int, dict]:
    """POST ``body`` to ``mlflow models serve`` of ``model_uri`` on a free loopback port; stopped after."""
    port = free_port()
    env = {**project.env, "MLFLOW_TRACKING_URI": f"sqlite:///{project.root}/mlflow.db"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            model_uri,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=project.root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/ping", process, timeout=300)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


@pytest.mark.slow
def test_served_mnist_model_reads_raw_images(trained_project):
    images = np.load(trained_project.root / "data/prepared/mnist/x_test.npy")[:3]
    status, answer = served(trained_project, "models:/mnist@champion", {"inputs": images.tolist()})
    assert status == 200, answer
    confusion = (trained_project.root / "metrics/mnist_confusion.csv").read_text().splitlines()[1:4]
    assert [row["digit"] for row in answer["predictions"]] == [int(line.split(",")[1]) for line in confusion]
    assert all(len(row["probabilities"]) == 10 for row in answer["predictions"])


@pytest.mark.slow
def test_served_fable_model_continues_prompts(trained_project):
    story = (trained_project.root / "metrics/fable_story.txt").read_text().split()
    status, answer = served(
        trained_project, "models:/fable@champion", {"inputs": [" ".join(story[:3])], "params": {"story_words": 4}}
    )
    assert status == 200, answer
    assert answer["predictions"] == [{"story": " ".join(story[3:7])}]


@pytest.mark.slow
def test_serving_benchmark_measures_load_time_and_requests_per_second(trained_copy):
    result = trained_copy.python("-m", "bench.serving", "--requests", "3")
    rows = json.loads((trained_copy.root / "bench/serving.json").read_text())
    assert [row["model"] for row in rows] == ["models:/mnist@champion", "models:/fable@champion"]
    assert all(row["load_s"] > 0 and row["requests_per_s"] > 0 and row["requests"] == 3 for row in rows)
    assert "| models:/mnist@champion |" in result.stdout
