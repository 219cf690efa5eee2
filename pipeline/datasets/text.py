"""The story's text as tokens, and back: what the vocabulary stage, the fable task and generate share.

``word`` tokens are words and punctuation marks (the seed's), ``char`` tokens every visible character
(for languages written without spaces). The vocabulary file (``paths.fable.vocabulary``) is the
vocabulary stage's output; a prompt is checked against it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pipeline import files
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from pipeline.config import Params

# A word (letters, digits, inner apostrophes as in "don't") or any single other visible character.
_WORD_TOKEN = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")


class TextError(PipelineError):
    """The story's text cannot be read."""


class PromptError(PipelineError):
    """A prompt the model cannot start from."""


def tokenize(text: str, mode: Literal["word", "char"]) -> list[str]:
    """``word``: words and punctuation marks; ``char``: every character that is not whitespace."""
    if mode == "word":
        return _WORD_TOKEN.findall(text)
    return [character for character in text if not character.isspace()]


def detokenize(tokens: Sequence[str], mode: Literal["word", "char"]) -> str:
    """Tokens back into text: words separated by spaces, characters written as they are."""
    return (" " if mode == "word" else "").join(tokens)


def prompt_tokens(
    prompt: str | None, text_tokens: Sequence[str], vocabulary: dict, n_input: int, source: str = "the vocabulary"
) -> list[str]:
    """The tokens a story starts from: ``prompt``'s, or (None) the text's own first ``n_input``.

    A prompt must have exactly ``n_input`` tokens, all in the vocabulary (``source`` names its file).
    """
    if prompt is None:
        return list(text_tokens[:n_input])
    tokens = tokenize(prompt, vocabulary["tokens"])
    if len(tokens) != n_input:
        raise PromptError(f"prompt {prompt!r} has {len(tokens)} tokens {tokens}; the model reads exactly {n_input}")
    unknown = [token for token in tokens if token not in vocabulary["dictionary"]]
    if unknown:
        raise PromptError(f"prompt {prompt!r}: {', '.join(map(repr, unknown))} not in {source}")
    return tokens


def read_text(path: str | Path) -> str:
    """The story (UTF-8), or one line naming the file."""
    return files.read_text(path, TextError)


def load_vocabulary(path: str | Path) -> dict:
    """The vocabulary stage's file: tokens kind, dictionary, reverse dictionary, ceiling."""
    return files.read_json(path, TextError)


def text_tokens(params: Params) -> tuple[list[str], dict]:
    """The fable's tokens and its vocabulary file."""
    paths = params.paths.fable
    vocabulary = load_vocabulary(paths.vocabulary)
    return tokenize(read_text(paths.raw), vocabulary["tokens"]), vocabulary
