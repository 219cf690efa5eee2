"""Models that travel: each run's pyfunc model loads where the project cannot be imported, and answers
as the pipeline's evaluation did."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from conftest import free_port, wait_until_up

from pipeline.processes import stop_group
from pipeline.serving.requests import MAX_PROMPTS, MAX_STORY_WORDS, MAX_WORDS_PER_REQUEST

# The served models' tests on one worker: each server (session-scoped, below) starts once.
pytestmark = pytest.mark.xdist_group("serving")

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


@dataclass(frozen=True)
class Served:
    """``mlflow models serve`` of one model on a loopback port."""

    url: str

    def post(self, body: dict) -> tuple[int, dict, str, float]:
        """The status, JSON body, raw body and seconds of the answer to ``body``."""
        request = urllib.request.Request(
            f"{self.url}/invocations", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        start = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode()
        return status, json.loads(text), text, time.monotonic() - start


@contextlib.contextmanager
def serving(project, model_uri: str) -> Iterator[Served]:
    """``mlflow models serve`` of ``model_uri`` on a free loopback port; stopped after."""
    port = free_port()
    env = {**project.env, "MLFLOW_TRACKING_URI": f"sqlite:///{project.root}/mlflow.db"}
    command = ["-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local", "-h", "127.0.0.1"]
    process = subprocess.Popen(
        [sys.executable, *command, "-p", str(port)],
        cwd=project.root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/ping", process, timeout=300)
        yield Served(f"http://127.0.0.1:{port}")
    finally:
        stop_group(process, grace=60)


# One server per model for the whole session: the bad requests and the good ones after them go to the same.
@pytest.fixture(scope="session")
def mnist_server(trained_project) -> Iterator[Served]:
    with serving(trained_project, "models:/mnist@champion") as server:
        yield server


@pytest.fixture(scope="session")
def fable_server(trained_project) -> Iterator[Served]:
    with serving(trained_project, "models:/fable@champion") as server:
        yield server


def first_test_images(project, count: int) -> np.ndarray:
    return np.load(project.root / "data/prepared/mnist/x_test.npy")[:count]


def evaluated_digits(project, count: int) -> list[int]:
    """The evaluate stage's predictions for the first ``count`` test images."""
    confusion = (project.root / "metrics/mnist_confusion.csv").read_text().splitlines()[1 : count + 1]
    return [int(line.split(",")[1]) for line in confusion]


def the_story(project) -> list[str]:
    return (project.root / "metrics/fable_story.txt").read_text().split()


def answers_good_requests(project, mnist: Served | None = None, fable: Served | None = None) -> None:
    if mnist:
        status, answer, _, _ = mnist.post({"inputs": first_test_images(project, 3).tolist()})
        assert status == 200, answer
        assert [row["digit"] for row in answer["predictions"]] == evaluated_digits(project, 3)
        assert all(len(row["probabilities"]) == 10 for row in answer["predictions"])
    if fable:
        story = the_story(project)
        status, answer, _, _ = fable.post({"inputs": [" ".join(story[:3])], "params": {"story_words": 4}})
        assert status == 200, answer
        assert answer["predictions"] == [{"story": " ".join(story[3:7])}]  # the evaluate stage's story


def a_clean_refusal(project, answer: tuple[int, dict, str, float]) -> str:
    """The message of a 400 answered at once, without a traceback or a path of the server's."""
    status, body, text, seconds = answer
    assert status == 400 and body["error_code"] in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST"), text[:2000]
    assert seconds < 1, f"{seconds:.2f} s"
    for leak in ("Traceback", 'File "', "stack_trace", "site-packages", "/work/", str(project.root)):
        assert leak not in text, f"{leak!r} in {text[:2000]}"
    return body["message"]


@pytest.mark.slow
def test_served_models_answer_good_requests(trained_project, mnist_server, fable_server):
    answers_good_requests(trained_project, mnist_server, fable_server)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (lambda image: image / 255, "image 0 has only pixels 0 and 1: scaled to 0..1"),  # the usual slip
        (lambda image: image * 0, "or blank? the model reads whole numbers 0-255 (uint8)"),
        (lambda image: np.full(image.shape, 256), "Python integer 256 out of bounds for uint8"),  # MLflow's cast
        (lambda image: image[:, :27], "does not match expected shape (-1, 28, 28)"),  # MLflow's schema check
    ],
    ids=["scaled-to-0..1", "blank", "256", "27-columns"],
)
def test_served_mnist_model_refuses_bad_images_clearly_then_reads_good_ones(
    trained_project, mnist_server, image, expected
):
    bad = image(first_test_images(trained_project, 1)[0])
    message = a_clean_refusal(trained_project, mnist_server.post({"inputs": [bad.tolist()]}))
    assert expected in message
    answers_good_requests(trained_project, mnist=mnist_server)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("request_of", "expected"),
    [
        (lambda story: {"inputs": [" ".join([*story[:2], "zebra"])]}, "'zebra' not in the model's vocabulary"),
        (lambda story: {"inputs": [" ".join(story[:2])]}, "has 2 tokens: the model reads 3 tokens of its story"),
        (lambda story: {"inputs": [""]}, "'' has 0 tokens: the model reads 3 tokens"),
        (
            lambda story: {"inputs": [" ".join(story[:3])], "params": {"story_words": 1_000_000}},
            f"story_words must be 0-{MAX_STORY_WORDS}, got 1000000",
        ),
        (
            lambda story: {"inputs": [" ".join(story[:3])] * 5000},
            f"5000 prompts in one request: at most {MAX_PROMPTS}",
        ),
        (
            lambda story: {"inputs": [" ".join(story[:3])] * 50, "params": {"story_words": 500}},
            f"= 25000 words to generate: at most {MAX_WORDS_PER_REQUEST} per request",
        ),
    ],
    ids=["unknown-word", "two-words", "empty-prompt", "story-words-1e6", "5000-prompts", "50x500-words"],
)
def test_served_fable_model_refuses_bad_requests_clearly_then_tells_stories(
    trained_project, fable_server, request_of, expected
):
    message = a_clean_refusal(trained_project, fable_server.post(request_of(the_story(trained_project))))
    assert expected in message
    assert "Failed to predict data" not in message  # the model's refusal alone, not MLflow's echo of the request
    answers_good_requests(trained_project, fable=fable_server)


@pytest.mark.slow
def test_served_models_refuse_an_empty_batch_alike(trained_project, mnist_server, fable_server):
    # MLflow's schema check refuses [] before the model sees it, for both models the same way.
    answers = [server.post({"inputs": []}) for server in (mnist_server, fable_server)]
    for answer in answers:
        a_clean_refusal(trained_project, answer)
    assert {(body["error_code"], body["error_class"]) for _, body, _, _ in answers} == {
        ("INVALID_PARAMETER_VALUE", "SCHEMA_ENFORCEMENT_FAILED")
    }
    answers_good_requests(trained_project, mnist_server, fable_server)


@pytest.mark.slow
def test_serving_benchmark_measures_load_time_and_requests_per_second(trained_copy):
    result = trained_copy.python("-m", "bench.serving", "--requests", "3")
    rows = json.loads((trained_copy.root / "bench/serving.json").read_text())
    assert [row["model"] for row in rows] == ["models:/mnist@champion", "models:/fable@champion"]
    assert all(row["load_s"] > 0 and row["requests_per_s"] > 0 and row["requests"] == 3 for row in rows)
    assert "| models:/mnist@champion |" in result.stdout
