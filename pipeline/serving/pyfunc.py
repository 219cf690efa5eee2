"""The trained models as self-contained MLflow pyfunc models: what leaves the project.

Each training run logs its model as an MLflow ``pyfunc`` model that carries everything it needs: the
``.keras`` archive, the fable's vocabulary, and this package's source (``code_paths``), so that
``mlflow.pyfunc.load_model(uri)`` works in a process that cannot import the project, and
``mlflow models serve`` answers ``/invocations``:

- ``mnist``: raw images, shape (N, 28, 28), uint8 pixel values 0-255 -> per image the
  ``digit`` and its 10 class ``probabilities``: the predictions of the evaluate stage.
- ``fable``: prompts (strings of ``fable.n_input`` tokens of the story's vocabulary) -> per prompt the
  ``story``: the ``fable.story_words`` tokens that follow (or the request's ``story_words`` param),
  joined as the story's tokens are (spaces between words, nothing between characters). Its
  ``model_config`` holds the token kind and the stage's prompt.

Every request is checked before any work (pipeline.serving.requests: its limits, and a refusal the
scoring server answers as a 400 with a clear message): unknown tokens named, a prompt's length, the
pixels' range, the shape, an empty batch, too many images or prompts, too large a ``story_words``.

When TensorFlow is not loaded yet in the process that loads the model, its kernels and threads are
pinned as the training's ``numerics`` (pipeline.model.numerics), so the model computes what the evaluate
stage computed; in a process that loaded TensorFlow before, it runs on that process's kernels.

With pipeline.tracking.runs and pipeline.serving.requests, the only modules that import ``mlflow``: the
wrapper classes must subclass MLflow's ``PythonModel`` (and a refusal must be MLflow's exception type).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from pipeline.files import file_digest
from pipeline.serving.requests import images_array, prompt_list, prompt_tokens, story_words

# The whole package travels with the model (code_paths): its classes import pipeline.model and pipeline.datasets.
PACKAGE_DIRECTORY = Path(__file__).resolve().parents[1]


def _pin(config: dict[str, Any]) -> None:
    """The training's kernels and threads, where TensorFlow is not loaded yet (see the module docstring)."""
    if "tensorflow" not in sys.modules:
        from pipeline.model import numerics  # noqa: PLC0415

        numerics.pin(
            config["numerics_mode"], config["parallel_slices"], config["threads_per_slice"], stage="mlflow model"
        )


def checked_model(context: mlflow.pyfunc.PythonModelContext) -> str:
    """The ``.keras`` archive, once its sha256 is the one recorded when it was logged (``model_sha256``: what its
    run's and registered version's ``model_sha256`` tags hold): a file changed in the artifact store since is
    refused before it is loaded. Models logged before the digest was recorded load unchecked."""
    path, expected = context.artifacts["model"], context.model_config.get("model_sha256")
    if expected is not None and file_digest(path) != expected:
        from mlflow.exceptions import MlflowException  # noqa: PLC0415

        raise MlflowException(
            f"the model file's sha256 {file_digest(path)} is not the {expected} recorded when it was logged "
            "(model_sha256): it was changed in the artifact store; not loaded"
        )
    return path


class DigitReader(mlflow.pyfunc.PythonModel):
    """MNIST: raw images in, the digit and the 10 class probabilities of each out."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        model_file = checked_model(context)
        _pin(context.model_config)
        from pipeline.model.inference import logits_function  # noqa: PLC0415 - TensorFlow loads after _pin
        from pipeline.model.saving import load_model  # noqa: PLC0415

        self.logits = logits_function(load_model(model_file))

    # The hints say which input types the model takes, not a schema (MLflow infers none from these two types):
    # the logged signature validates the requests.
    def predict(self, context: Any, model_input: np.ndarray, params: dict | None = None) -> pd.DataFrame:
        images = images_array(model_input)  # a bad request is refused before any TensorFlow work
        from pipeline.model.inference import softmax  # noqa: PLC0415

        probabilities = softmax(self.logits(images))
        return pd.DataFrame(
            {
                "digit": probabilities.argmax(axis=1).astype(np.int64),
                "probabilities": [row.tolist() for row in probabilities],
            }
        )


class StoryTeller(mlflow.pyfunc.PythonModel):
    """The fable: prompts in, each prompt's continuation (``story_words`` tokens) out."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        model_file = checked_model(context)
        _pin(context.model_config)
        from pipeline.datasets.text import load_vocabulary  # noqa: PLC0415
        from pipeline.model.inference import logits_function  # noqa: PLC0415 - TensorFlow loads after _pin
        from pipeline.model.saving import load_model  # noqa: PLC0415

        self.model = load_model(model_file)
        self.logits = logits_function(self.model, batch_size=1)  # traced at the first request, then reused
        self.vocabulary = load_vocabulary(context.artifacts["vocabulary"])
        self.n_input, self.words = context.model_config["n_input"], context.model_config["story_words"]
        self.example = context.model_config["prompt"]  # quoted in the refusal of a bad prompt

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        words = story_words(params, self.words)
        prompts = prompt_list(model_input, words)
        # Every prompt checked before the first is told: a bad one costs no generation.
        starts = [
            prompt_tokens(prompt, number, self.vocabulary, self.n_input, self.example)
            for number, prompt in enumerate(prompts)
        ]
        return pd.DataFrame({"story": [self.tell(start, words) for start in starts]})

    def tell(self, start: list[str], words: int) -> str:
        from pipeline.datasets.text import detokenize  # noqa: PLC0415
        from pipeline.model.inference import generate  # noqa: PLC0415 - TensorFlow loads after _pin

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
        "model_sha256": file_digest(model_path),  # checked at every load (checked_model)
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
