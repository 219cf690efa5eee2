"""Stage vocabulary: the fable's tokens, the seed's frequency-ordered dictionary, and the accuracy ceiling.

Run::

    python -m pipeline.vocabulary

Writes ``paths.fable.vocabulary``, a JSON file with the dictionary (token → id, ids by descending
frequency, ties by first occurrence, as the seed's ``build_dataset``), the reverse dictionary, and, for
``fable.n_input``, the number of training windows and the accuracy ceiling: the share of windows whose
continuation is the most frequent continuation of their context. No model can beat it, because the
same ``n_input`` words are followed by different words in different places of the text.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.config import load_params
from pipeline.errors import PipelineError
from pipeline.files import read_json, write_json
from pipeline.stage import run_stage, stage_parser

# A word (letters, digits, inner apostrophes as in "don't") or any single other visible character.
_WORD_TOKEN = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")


class VocabularyError(PipelineError):
    """The text cannot make a next-token training set."""


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


def prompt_tokens(prompt: str | None, text_tokens: Sequence[str], vocabulary: dict, n_input: int,
                  source: str = "the vocabulary") -> list[str]:
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


def build_dictionary(tokens: Sequence[str]) -> dict[str, int]:
    """Token → id, most frequent first; equally frequent tokens in order of first occurrence."""
    counts = Counter(tokens)  # a Counter keeps first-occurrence order, and sorted() is stable
    ranked = sorted(counts, key=lambda token: -counts[token])
    return {token: index for index, token in enumerate(ranked)}


@dataclass(frozen=True)
class Ceiling:
    windows: int
    best_correct: int

    @property
    def accuracy(self) -> float:
        return self.best_correct / self.windows


def accuracy_ceiling(tokens: Sequence[str], n_input: int) -> Ceiling:
    """The most windows any predictor of the next token from the previous ``n_input`` can get right."""
    continuations: defaultdict[tuple[str, ...], Counter[str]] = defaultdict(Counter)
    for start in range(len(tokens) - n_input):
        continuations[tuple(tokens[start : start + n_input])][tokens[start + n_input]] += 1
    windows = max(len(tokens) - n_input, 0)
    return Ceiling(windows=windows, best_correct=sum(max(c.values()) for c in continuations.values()))


def build_vocabulary(text: str, mode: Literal["word", "char"], n_input: int, source: str) -> dict:
    """The vocabulary file's content for ``text``; ``source`` names the text in errors."""
    tokens = tokenize(text, mode)
    if not tokens:
        raise VocabularyError(f"{source}: no {mode} tokens: the text is empty")
    if len(tokens) < n_input + 1:
        raise VocabularyError(
            f"{source}: {len(tokens)} {mode} tokens, but fable.n_input = {n_input} needs at least {n_input + 1}"
        )
    dictionary = build_dictionary(tokens)
    if len(dictionary) < 2:
        raise VocabularyError(f"{source}: a vocabulary of one token ({tokens[0]!r}) leaves nothing to predict")
    ceiling = accuracy_ceiling(tokens, n_input)
    return {
        "tokens": mode,
        "token_count": len(tokens),
        "dictionary": dictionary,
        "reverse_dictionary": {str(index): token for token, index in dictionary.items()},
        "n_input": n_input,
        "windows": ceiling.windows,
        "ceiling_correct": ceiling.best_correct,
        "ceiling": ceiling.accuracy,
    }


def read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise VocabularyError(f"{path}: cannot read: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise VocabularyError(f"{path}: not UTF-8 text: {error.reason} at byte {error.start}") from None


def load_vocabulary(path: str | Path) -> dict:
    return read_json(path)


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser("pipeline.vocabulary", __doc__)
    args = parser.parse_args(argv)
    with run_stage("vocabulary"):
        params = load_params(args.params)
        source = params.paths.fable.raw
        vocabulary = build_vocabulary(read_text(source), params.data.fable.tokens, params.fable.n_input, source)
        write_json(params.paths.fable.vocabulary, vocabulary)
        print(
            f"vocabulary: {vocabulary['token_count']} tokens, {len(vocabulary['dictionary'])} distinct; "
            f"{vocabulary['windows']} windows of {vocabulary['n_input']}, ceiling "
            f"{vocabulary['ceiling_correct']}/{vocabulary['windows']} = {vocabulary['ceiling']:.4f}"
        )


if __name__ == "__main__":
    main()
