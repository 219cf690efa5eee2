"""The trained models as self-contained MLflow pyfunc models: what leaves the project.

Each training run logs its model as an MLflow ``pyfunc`` model that carries everything it needs: the
``.keras`` archive, the fable's vocabulary, and this package's source (``code_paths``), so that
``mlflow.pyfunc.load_model(uri)`` works in a process that cannot import the project, and
``mlflow models serve`` answers ``/invocations``:

- ``mnist``: raw images, shape (N, 28, 28), pixel values 0-255 (uint8 or int) -> per image the
  ``digit`` and its 10 class ``probabilities``: the predictions of the evaluate stage.
- ``fable``: prompts (strings of ``fable.n_input`` tokens of the story's vocabulary) -> per prompt the
  ``story``: the ``fable.story_words`` tokens that follow (or the request's ``story_words`` param),
  joined as the story's tokens are (spaces between words, nothing between characters). Unknown tokens
  fail with a message naming them. Its ``model_config`` holds the token kind and the stage's prompt.

When TensorFlow is not loaded yet in the process that loads the model, its kernels and threads are
pinned as the training's ``numerics`` (pipeline.model.numerics), so the model computes what the evaluate
stage computed; in a process that loaded TensorFlow before, it runs on that process's kernels.

With pipeline.tracking.runs, the only module that imports ``mlflow``: the wrapper classes must subclass
MLflow's ``PythonModel``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from pipeline.errors import PipelineError

# The whole package travels with the model (code_paths): its classes import pipeline.model and pipeline.datasets.
PACKAGE_DIRECTORY = Path(__file__).resolve().parents[1]


class ServingError(PipelineError):
    """A request the model cannot answer (wrong shape, unknown words)."""


def _pin(config: dict[str, Any]) -> None:
    """The training's kernels and threads, where TensorFlow is not loaded yet (see the module docstring)."""
    if "tensorflow" not in sys.modules:
        from pipeline.model import numerics  # noqa: PLC0415

        numerics.pin(
            config["numerics_mode"], config["parallel_slices"], config["threads_per_slice"], stage="mlflow model"
        )


def _column(model_input: Any, name: str) -> list:
    """The values of column ``name`` (or the only column) of a DataFrame, or the items of a list/array/Series."""
    if isinstance(model_input, pd.DataFrame):
        column = name if name in model_input.columns else model_input.columns[0]
        return model_input[column].tolist()
    if isinstance(model_input, (pd.Series, np.ndarray)):
        return model_input.tolist()
    if isinstance(model_input, str):
        return [model_input]
    return list(model_input)


def images_array(model_input: Any) -> np.ndarray:
    """(N, 28, 28) uint8 pixels from an array, nested lists or a DataFrame of images (one per row)."""
    if isinstance(model_input, pd.DataFrame):
        model_input = np.stack([np.asarray(value) for value in _column(model_input, "image")])
    images = np.asarray(model_input)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ServingError(f"expected images of shape (N, 28, 28), got an array of shape {images.shape}")
    if images.size and (images.min() < 0 or images.max() > 255):
        raise ServingError(f"pixel values must be 0-255, got {images.min()}..{images.max()}")
    return images.astype(np.uint8)


class DigitReader(mlflow.pyfunc.PythonModel):
    """MNIST: raw images in, the digit and the 10 class probabilities of each out."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        _pin(context.model_config)
        from pipeline.model.inference import logits_function  # noqa: PLC0415 - TensorFlow loads after _pin
        from pipeline.model.saving import load_model  # noqa: PLC0415

        self.logits = logits_function(load_model(context.artifacts["model"]))

    # The hints say which input types the model takes, not a schema (MLflow infers none from these two types):
    # the logged signature validates the requests.
    def predict(self, context: Any, model_input: np.ndarray, params: dict | None = None) -> pd.DataFrame:
        from pipeline.model.inference import softmax  # noqa: PLC0415

        probabilities = softmax(self.logits(images_array(model_input)))
        return pd.DataFrame(
            {
                "digit": probabilities.argmax(axis=1).astype(np.int64),
                "probabilities": [row.tolist() for row in probabilities],
            }
        )


class StoryTeller(mlflow.pyfunc.PythonModel):
    """The fable: prompts in, each prompt's continuation (``story_words`` tokens) out."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        _pin(context.model_config)
        from pipeline.datasets.text import load_vocabulary  # noqa: PLC0415
        from pipeline.model.inference import logits_function  # noqa: PLC0415 - TensorFlow loads after _pin
        from pipeline.model.saving import load_model  # noqa: PLC0415

        self.model = load_model(context.artifacts["model"])
        self.logits = logits_function(self.model, batch_size=1)  # traced at the first request, then reused
        self.vocabulary = load_vocabulary(context.artifacts["vocabulary"])
        self.n_input, self.words = context.model_config["n_input"], context.model_config["story_words"]

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        words = int((params or {}).get("story_words", self.words))
        if words < 0:
            raise ServingError(f"story_words must be 0 or more, got {words}")
        return pd.DataFrame({"story": [self.tell(str(prompt), words) for prompt in _column(model_input, "prompt")]})

    def tell(self, prompt: str, words: int) -> str:
        from pipeline.datasets.text import detokenize, prompt_tokens  # noqa: PLC0415
        from pipeline.model.inference import generate  # noqa: PLC0415 - TensorFlow loads after _pin

        start = prompt_tokens(prompt, [], self.vocabulary, self.n_input, "the model's vocabulary")
        story = generate(self.model, self.vocabulary, start, words, self.logits)
        return detokenize(story[self.n_input :], self.vocabulary["tokens"])


@dataclass(frozen=True)
class Packaging:
    """What ``mlflow.pyfunc.log_model`` needs for one task's model, besides the package source."""

    python_model: mlflow.pyfunc.PythonModel
    artifacts: dict[str, str]
    model_config: dict[str, Any]
    input_example: Any
    signature: Any


def packaging(task: str, model_path: Path, params: Any) -> Packaging:
    """How the model of ``task`` at ``model_path`` travels; its input example is two real inputs."""
    from mlflow.models import ModelSignature  # noqa: PLC0415
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec  # noqa: PLC0415

    training = params.training(task)
    config = {
        "numerics_mode": params.numerics.mode,
        "parallel_slices": training.parallel_slices,
        "threads_per_slice": params.numerics.threads_per_slice,
    }
    if task == "mnist":
        from pipeline.datasets.splits import load_split  # noqa: PLC0415

        return Packaging(
            python_model=DigitReader(),
            artifacts={"model": str(model_path)},
            model_config=config,
            input_example=load_split(params.paths.mnist.prepared, "test")[0][:2],
            signature=ModelSignature(
                inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, 28, 28))]),
                outputs=Schema([ColSpec("long", "digit"), ColSpec(Array("double"), "probabilities")]),
            ),
        )
    from pipeline.datasets.text import detokenize, text_tokens  # noqa: PLC0415

    tokens, vocabulary = text_tokens(params)
    n = training.n_input
    example = [detokenize(tokens[:n], vocabulary["tokens"]), detokenize(tokens[n : 2 * n], vocabulary["tokens"])]
    return Packaging(
        python_model=StoryTeller(),
        artifacts={"model": str(model_path), "vocabulary": str(params.paths.fable.vocabulary)},
        model_config={
            **config,
            "n_input": training.n_input,
            "story_words": training.story_words,
            "tokens": vocabulary["tokens"],
            "prompt": training.prompt or example[0],
        },
        input_example=example,
        # One unnamed string column: a plain list of prompts is a valid request.
        signature=ModelSignature(
            inputs=Schema([ColSpec("string")]),
            outputs=Schema([ColSpec("string", "story")]),
            params=ParamSchema([ParamSpec("story_words", "long", training.story_words)]),
        ),
    )


def requirements() -> list[str]:
    """The packages the model needs where it is loaded, at the versions it was trained with."""
    from importlib.metadata import version  # noqa: PLC0415

    return [f"{name}=={version(name)}" for name in ("tensorflow", "keras", "numpy", "pandas", "pydantic", "pyyaml")]
