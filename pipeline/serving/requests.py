"""What a request to the served models may hold, checked before any work: anything else is refused at once
with one message that says what is wrong and what is expected (docs/serving.md, "Bad requests and limits").

The refusal is a :class:`ServingError`, MLflow's own ``MlflowException`` with ``INVALID_PARAMETER_VALUE``:
``mlflow models serve`` answers it with a 400 whose JSON ``message`` is ours alone, without a traceback (any
other exception becomes a generic 400 carrying the server's traceback, file paths included). It is also
a :class:`PipelineError`, so that ``pipeline.predict`` and ``pipeline.generate --model`` print it as one line.

The limits bound the work of one request: the fable model generates one token after the other (about
3.5 ms each for the default LSTM(512), measured on a busy 2-core machine), and MLflow's scoring server gives
up on a request after 60 s (``MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT``) while the model goes on generating.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from pipeline.datasets.text import tokenize
from pipeline.errors import PipelineError

MAX_IMAGES = 10_000  # images per request: the whole MNIST test split
MAX_PROMPTS = 100  # prompts per request
MAX_STORY_WORDS = 1_000  # story_words: about five times the fable's own 204 tokens
# prompts × story_words: the tokens one request generates, ~15 s at 3.5 ms each, a quarter of MLflow's timeout
MAX_WORDS_PER_REQUEST = 4_096

IMAGE_SHAPE = (28, 28)
SHOWN_CHARACTERS = 40  # of a prompt or a word quoted in a message: a refusal never echoes a huge input


class ServingError(PipelineError, MlflowException):
    """A request the model cannot answer: its message names what is wrong and what the model expects."""

    def __init__(self, message: str) -> None:
        MlflowException.__init__(self, message, error_code=INVALID_PARAMETER_VALUE)

    # The scoring server rewrites a model's MlflowException's message as "Failed to predict data '<the
    # request's repr>'. Error: <message>": for one image, 28 lines of pixels before what is wrong. The
    # refusal keeps the message it was made with, the one str() gives.
    @property
    def message(self) -> str:
        return str(self)

    @message.setter
    def message(self, value: str) -> None:
        """Ignored: MlflowException.__init__ sets the message that str() already gives."""


def quoted(text: str) -> str:
    """``text`` as a Python literal, cut to its first SHOWN_CHARACTERS characters (its length said)."""
    if len(text) <= SHOWN_CHARACTERS:
        return repr(text)
    return f"{text[:SHOWN_CHARACTERS]!r}... ({len(text)} characters)"


def column(model_input: Any, name: str) -> list:
    """The values of column ``name`` (or the only column) of a DataFrame, or the items of a list/array/Series."""
    if isinstance(model_input, pd.DataFrame):
        if model_input.columns.empty:
            return []
        found = name if name in model_input.columns else model_input.columns[0]
        return model_input[found].tolist()
    if isinstance(model_input, (pd.Series, np.ndarray)):
        return model_input.tolist()
    if isinstance(model_input, str):
        return [model_input]
    return list(model_input)


def batch_size(count: int, limit: int, items: str) -> None:
    """Refuses an empty batch and one of more than ``limit`` ``items``."""
    if count == 0:
        raise ServingError(f"an empty batch: send 1 to {limit} {items}")
    if count > limit:
        raise ServingError(f"{count} {items} in one request: at most {limit} (send the rest in further requests)")


# --- MNIST ---------------------------------------------------------------------------------------------


def images_array(model_input: Any) -> np.ndarray:
    """(N, 28, 28) uint8 pixels from an array, nested lists or a DataFrame of images (one per row).

    Pixels are whole numbers 0-255 (MNIST's: 0 the ground, 255 full ink), of any numeric dtype. An image
    whose pixels are all 0 or 1 is refused: it is what pixels scaled to 0..1 become once cut to whole
    numbers (the signature's uint8, which MLflow's scoring server casts JSON numbers to), a blank image
    included.
    """
    if isinstance(model_input, pd.DataFrame):
        model_input = [np.asarray(value) for value in column(model_input, "image")]
    try:
        images = np.asarray(model_input)
    except ValueError:  # ragged nested lists
        raise ServingError(f"images of different shapes: each must be {_shape_text()} pixels") from None
    if images.ndim == 2:
        images = images[None]
    if images.ndim and not len(images):
        batch_size(0, MAX_IMAGES, "images")
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise ServingError(f"expected images of shape {_shape_text('N, ')}, got an array of shape {images.shape}")
    batch_size(len(images), MAX_IMAGES, "images")
    if images.dtype.kind not in "uif":
        raise ServingError(f"pixels must be numbers 0-255, got dtype {images.dtype}")
    if not np.isfinite(images).all():
        raise ServingError("pixels must be numbers 0-255, got NaN or infinity")
    low, high = images.min(), images.max()
    if low < 0 or high > 255:
        raise ServingError(f"pixel values must be 0-255, got {low:g}..{high:g}")
    faint = np.flatnonzero(images.reshape(len(images), -1).max(axis=1) <= 1)
    if faint.size:
        others = f" (and {faint.size - 1} more)" if faint.size > 1 else ""
        raise ServingError(
            f"image {faint[0]}{others} has only pixels 0 and 1: scaled to 0..1 (cut to whole numbers), or blank? "
            "the model reads whole numbers 0-255 (uint8): 0 the ground, 255 full ink"
        )
    if (images != np.round(images)).any():
        raise ServingError("pixels must be whole numbers 0-255, got fractions")
    return images.astype(np.uint8)


def _shape_text(prefix: str = "") -> str:
    return f"({prefix}{', '.join(map(str, IMAGE_SHAPE))})"


# --- the fable -----------------------------------------------------------------------------------------


def story_words(params: dict | None, default: int) -> int:
    """The request's ``story_words`` param (``default`` without one): a whole number 0..MAX_STORY_WORDS."""
    words = (params or {}).get("story_words", default)
    if isinstance(words, bool) or not isinstance(words, (int, np.integer)):
        raise ServingError(f"story_words must be a whole number 0-{MAX_STORY_WORDS}, got {words!r}")
    if not 0 <= words <= MAX_STORY_WORDS:
        raise ServingError(f"story_words must be 0-{MAX_STORY_WORDS}, got {words}")
    return int(words)


def prompt_list(model_input: Any, words: int) -> list:
    """The request's prompts, refused at once where there are none, too many, or too many words to generate."""
    prompts = column(model_input, "prompt")
    batch_size(len(prompts), MAX_PROMPTS, "prompts")
    if len(prompts) * words > MAX_WORDS_PER_REQUEST:
        raise ServingError(
            f"{len(prompts)} prompts × story_words {words} = {len(prompts) * words} words to generate: at most "
            f"{MAX_WORDS_PER_REQUEST} per request (fewer prompts per request, or fewer story_words)"
        )
    return prompts


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def prompt_tokens(prompt: Any, number: int, vocabulary: dict, n_input: int, example: str) -> list[str]:
    """The tokens of prompt ``number`` (0-based): exactly ``n_input``, all in ``vocabulary``; ``example``: a
    prompt the model takes, quoted in each refusal."""
    expected = f"the model reads {n_input} tokens of its story, e.g. {quoted(example)}"
    if not isinstance(prompt, str):
        raise ServingError(f"prompt {number} is {type(prompt).__name__} {prompt!r:.{SHOWN_CHARACTERS}}: {expected}")
    tokens = tokenize(prompt, vocabulary["tokens"])
    if len(tokens) != n_input:
        raise ServingError(f"prompt {number} {quoted(prompt)} has {_count(len(tokens), 'token')}: {expected}")
    unknown = list(dict.fromkeys(token for token in tokens if token not in vocabulary["dictionary"]))
    if unknown:
        raise ServingError(
            f"prompt {number} {quoted(prompt)}: {', '.join(map(quoted, unknown))} not in the model's vocabulary "
            f"({len(vocabulary['dictionary'])} tokens): {expected}"
        )
    return tokens
