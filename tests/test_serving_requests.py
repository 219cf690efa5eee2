"""What a request to the served models may hold: each bad one refused at once, with a message that says what
is wrong and what is expected; through MLflow's own scoring path, a 400 without a traceback."""

from __future__ import annotations

import json
import time
import warnings

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.pyfunc import scoring_server
from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

from pipeline.errors import PipelineError
from pipeline.serving.pyfunc import DigitReader, StoryTeller
from pipeline.serving.requests import (
    MAX_IMAGES,
    MAX_PROMPTS,
    MAX_STORY_WORDS,
    MAX_WORDS_PER_REQUEST,
    SHOWN_CHARACTERS,
    ServingError,
    column,
    images_array,
    prompt_list,
    prompt_tokens,
    quoted,
    story_words,
)

IMAGE = np.arange(28 * 28).reshape(28, 28) % 256  # pixels 0..255
TOKENS = ["long", "ago", ",", "the", "mice", "had"]
VOCABULARY = {"tokens": "word", "dictionary": {token: index for index, token in enumerate(TOKENS)}}
EXAMPLE = "long ago ,"


def test_a_refusal_is_mlflows_400_and_a_pipeline_error_that_keeps_its_message():
    error = ServingError("story_words must be 0-1000, got 5000")
    assert isinstance(error, MlflowException) and isinstance(error, PipelineError)
    assert error.get_http_status_code() == 400
    error.message = f"Failed to predict data '{IMAGE}'. \nError: {error.message}"  # what the scoring server does
    body = json.loads(error.serialize_as_json())
    assert body == {
        "error_code": "INVALID_PARAMETER_VALUE",
        "message": "story_words must be 0-1000, got 5000",
        "sqlstate": body["sqlstate"],
        "error_class": "INVALID_PARAMETER_VALUE",
    }  # no stack_trace, no echo of the request
    assert str(error) == "story_words must be 0-1000, got 5000"


def test_a_long_input_is_quoted_cut():
    assert quoted("long ago ,") == "'long ago ,'"
    long = "x" * 100_000
    assert quoted(long) == f"{'x' * SHOWN_CHARACTERS!r}... (100000 characters)"


def test_inputs_arrive_as_a_column_a_list_or_one_string():
    assert column(pd.DataFrame({"prompt": ["a b c", "d e f"]}), "prompt") == ["a b c", "d e f"]
    assert column(pd.DataFrame({0: ["a b c"]}), "prompt") == ["a b c"]  # MLflow's unnamed column
    assert column(["a b c"], "prompt") == ["a b c"] and column("a b c", "prompt") == ["a b c"]
    assert column(pd.DataFrame(), "prompt") == []


# --- MNIST ---------------------------------------------------------------------------------------------


def test_images_arrive_as_arrays_lists_or_one_image():
    assert images_array(IMAGE).shape == (1, 28, 28)
    assert images_array(IMAGE[None].tolist()).dtype == np.uint8
    np.testing.assert_array_equal(images_array(pd.DataFrame({"image": [IMAGE, IMAGE]})), np.stack([IMAGE, IMAGE]))
    np.testing.assert_array_equal(images_array(IMAGE.astype(np.float64)), IMAGE[None])  # whole-number floats
    faint_digit = np.zeros((28, 28), np.uint8)
    faint_digit[10, 10] = 2  # barely more than 0..1: still a 0-255 image
    assert images_array(faint_digit)[0, 10, 10] == 2


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((2, 28, 27)), r"shape \(N, 28, 28\), got an array of shape \(2, 28, 27\)"),
        (np.zeros(784), r"shape \(N, 28, 28\), got an array of shape \(784,\)"),
        ([[[1, 2], [3]]], r"images of different shapes: each must be \(28, 28\)"),
        (np.zeros((0, 28, 28), np.uint8), r"an empty batch: send 1 to 10000 images"),
        ([], r"an empty batch: send 1 to 10000 images"),
        (np.full((1, 28, 28), 256), r"pixel values must be 0-255, got 256\.\.256"),
        (np.where(IMAGE < 9, -1, IMAGE), r"pixel values must be 0-255, got -1\.\.255"),
        (IMAGE + 0.5, r"pixel values must be 0-255, got 0\.5\.\.255\.5"),
        (np.where(IMAGE > 9, IMAGE - 0.5, IMAGE), r"pixels must be whole numbers 0-255, got fractions"),
        (np.full((28, 28), np.nan), r"pixels must be numbers 0-255, got NaN or infinity"),
        (np.full((28, 28), "7"), r"numbers 0-255, got dtype <U1"),
        (IMAGE / 255, r"image 0 has only pixels 0 and 1: scaled to 0\.\.1 .*whole numbers 0-255 \(uint8\)"),
        ((IMAGE / 255).astype(np.uint8), r"image 0 has only pixels 0 and 1"),  # as the server casts them
        (np.stack([IMAGE, IMAGE * 0, IMAGE * 0]), r"image 1 \(and 1 more\) has only pixels 0 and 1: .* or blank\?"),
    ],
)
def test_bad_images_are_refused_with_what_is_expected(images, message):
    with pytest.raises(ServingError, match=message):
        images_array(images)


def test_too_many_images_are_refused_before_any_work():
    with pytest.raises(ServingError, match=f"{MAX_IMAGES + 1} images in one request: at most {MAX_IMAGES}"):
        images_array(np.broadcast_to(IMAGE, (MAX_IMAGES + 1, 28, 28)))
    assert len(images_array(np.broadcast_to(IMAGE, (MAX_IMAGES, 28, 28)))) == MAX_IMAGES


# --- the fable -----------------------------------------------------------------------------------------


def test_story_words_come_from_the_request_or_the_model():
    assert story_words(None, 32) == 32 and story_words({}, 32) == 32
    assert story_words({"story_words": 0}, 32) == 0
    assert story_words({"story_words": np.int64(MAX_STORY_WORDS)}, 32) == MAX_STORY_WORDS


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1_000_000, f"story_words must be 0-{MAX_STORY_WORDS}, got 1000000"),
        (MAX_STORY_WORDS + 1, f"story_words must be 0-{MAX_STORY_WORDS}, got {MAX_STORY_WORDS + 1}"),
        (-1, f"story_words must be 0-{MAX_STORY_WORDS}, got -1"),
        ("12", f"story_words must be a whole number 0-{MAX_STORY_WORDS}, got '12'"),
        (2.5, "a whole number .* got 2.5"),
        (True, "a whole number .* got True"),
    ],
)
def test_bad_story_words_are_refused(value, message):
    with pytest.raises(ServingError, match=message):
        story_words({"story_words": value}, 32)


def test_prompts_per_request_and_words_to_generate_are_bounded():
    assert prompt_list([EXAMPLE] * MAX_PROMPTS, 0) == [EXAMPLE] * MAX_PROMPTS
    assert len(prompt_list([EXAMPLE] * 4, MAX_WORDS_PER_REQUEST // 4)) == 4  # exactly at the limit
    with pytest.raises(ServingError, match=f"5000 prompts in one request: at most {MAX_PROMPTS}"):
        prompt_list([EXAMPLE] * 5000, 1)
    with pytest.raises(ServingError, match=rf"5 prompts × story_words 1000 = 5000 words .* {MAX_WORDS_PER_REQUEST}"):
        prompt_list([EXAMPLE] * 5, 1000)
    with pytest.raises(ServingError, match=f"an empty batch: send 1 to {MAX_PROMPTS} prompts"):
        prompt_list(pd.DataFrame({0: []}), 32)


def test_a_good_prompt_gives_its_tokens():
    assert prompt_tokens("the mice had", 0, VOCABULARY, 3, EXAMPLE) == ["the", "mice", "had"]


@pytest.mark.parametrize(
    ("prompt", "fragments"),
    [
        ("long ago zebra", ["prompt 2 'long ago zebra': 'zebra' not in the model's vocabulary (6 tokens)"]),
        ("lion zebra lion", ["'lion', 'zebra' not in"]),  # each named once
        ("long ago", ["prompt 2 'long ago' has 2 tokens: the model reads 3 tokens of its story, e.g. 'long ago ,'"]),
        ("", ["prompt 2 '' has 0 tokens: the model reads 3"]),
        ("x" * 5000, [f"prompt 2 {'x' * SHOWN_CHARACTERS!r}... (5000 characters) has 1 token: the model reads 3"]),
        (None, ["prompt 2 is NoneType None: the model reads 3 tokens of its story, e.g. 'long ago ,'"]),
    ],
)
def test_bad_prompts_are_refused_naming_the_prompt_and_what_is_expected(prompt, fragments):
    with pytest.raises(ServingError) as refused:
        prompt_tokens(prompt, 2, VOCABULARY, 3, EXAMPLE)
    for fragment in fragments:
        assert fragment in str(refused.value)
    assert len(str(refused.value)) < 200  # a huge prompt is not echoed


# --- through MLflow's scoring path, without TensorFlow: the network stubbed, the checks real ------------


class NoNetworkDigitReader(DigitReader):
    def load_context(self, context):
        self.logits = lambda images: np.tile(np.arange(10.0), (len(images), 1))  # always 9


class NoNetworkStoryTeller(StoryTeller):
    def load_context(self, context):
        self.vocabulary, self.n_input, self.words, self.example = VOCABULARY, 3, 2, EXAMPLE

    def tell(self, start, words):
        return " ".join([start[-1]] * words)


def test_every_prompt_is_checked_before_the_first_is_told():
    teller, told = NoNetworkStoryTeller(), []
    teller.load_context(None)
    teller.tell = lambda start, words: told.append(start) or ""
    with pytest.raises(ServingError, match="prompt 1 'long ago zebra'"):
        teller.predict(None, [EXAMPLE, "long ago zebra"])
    assert told == []  # a bad prompt anywhere costs no generation
    assert teller.predict(None, [EXAMPLE])["story"].tolist() == [""] and told == [["long", "ago", ","]]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """``scored(task, body)``: the status, JSON body and seconds of ``mlflow models serve``'s answer to ``body``
    (its request handler, in this process): an MlflowException answered as the server's wrapper does."""
    signatures = {
        "mnist": ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, 28, 28))]),
            outputs=Schema([ColSpec("long", "digit"), ColSpec(Array("double"), "probabilities")]),
        ),
        "fable": ModelSignature(
            inputs=Schema([ColSpec("string")]),
            outputs=Schema([ColSpec("string", "story")]),
            params=ParamSchema([ParamSpec("story_words", "long", 2)]),
        ),
    }
    models = {}
    for task, python_model in [("mnist", NoNetworkDigitReader()), ("fable", NoNetworkStoryTeller())]:
        path = tmp_path_factory.mktemp("models") / task
        with warnings.catch_warnings():  # "an input example was not provided": one would be predicted on
            warnings.simplefilter("ignore", UserWarning)
            mlflow.pyfunc.save_model(path, python_model=python_model, signature=signatures[task], pip_requirements=[])
        models[task] = mlflow.pyfunc.load_model(str(path))

    def answer(task: str, body: dict) -> tuple[int, dict, float]:
        model, start = models[task], time.monotonic()
        try:
            result = scoring_server.invocations(
                json.dumps(body), "application/json", model, model.metadata.get_input_schema()
            )
            status, text = result.status, result.response
        except MlflowException as error:
            status, text = error.get_http_status_code(), error.serialize_as_json()
        return status, json.loads(text), time.monotonic() - start

    return answer


@pytest.mark.parametrize(
    ("task", "body", "fragment"),
    [
        ("fable", {"inputs": ["long ago zebra"]}, "'zebra' not in the model's vocabulary"),
        ("fable", {"inputs": ["long ago"]}, "'long ago' has 2 tokens: the model reads 3"),
        ("fable", {"inputs": [""]}, "'' has 0 tokens"),
        ("fable", {"inputs": [EXAMPLE], "params": {"story_words": 1_000_000}}, "story_words must be 0-1000"),
        ("fable", {"inputs": [EXAMPLE] * 5000}, "5000 prompts in one request: at most 100"),
        ("mnist", {"inputs": [(IMAGE / 255).tolist()]}, "image 0 has only pixels 0 and 1: scaled to 0..1"),
        ("mnist", {"inputs": [np.zeros((28, 28), int).tolist()]}, "or blank?"),
    ],
)
def test_the_scoring_server_answers_a_refusal_with_its_message_alone(scored, task, body, fragment):
    status, answer, seconds = scored(task, body)
    assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE", answer
    assert fragment in answer["message"] and "Failed to predict data" not in answer["message"]
    assert set(answer) == {"error_code", "message", "sqlstate", "error_class"}  # no stack_trace
    assert seconds < 1


def test_the_scoring_server_answers_good_requests_after_bad_ones(scored):
    # The fable only: a digit's probabilities would load TensorFlow here (tests/test_serving.py serves both).
    assert scored("fable", {"inputs": ["long ago zebra"]})[0] == 400
    status, answer, _ = scored("fable", {"inputs": [EXAMPLE, "the mice had"], "params": {"story_words": 3}})
    assert (status, answer) == (200, {"predictions": [{"story": ", , ,"}, {"story": "had had had"}]})


def test_an_empty_batch_is_refused_alike_by_both_models(scored):
    # MLflow's schema check refuses [] before the model sees it (it takes an empty list for a list of records).
    answers = [scored(task, {"inputs": []}) for task in ("mnist", "fable")]
    assert [status for status, _, _ in answers] == [400, 400]
    assert {(answer["error_code"], answer["error_class"]) for _, answer, _ in answers} == {
        ("INVALID_PARAMETER_VALUE", "SCHEMA_ENFORCEMENT_FAILED")
    }
