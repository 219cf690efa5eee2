"""Stage vocabulary: the fable's tokens, the seed's frequency-ordered dictionary, and the accuracy ceiling.

Run::

    python -m pipeline.stages.vocabulary

Writes ``paths.fable.vocabulary``, a JSON file with the dictionary (token → id, ids by descending
frequency, ties by first occurrence, as the seed's ``build_dataset``), the reverse dictionary, and, for
``fable.n_input``, the number of training windows and the accuracy ceiling: the share of windows whose
continuation is the most frequent continuation of their context. No model can beat it, because the
same ``n_input`` words are followed by different words in different places of the text.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pipeline.cli import run_stage, stage_parser
from pipeline.config import load_params
from pipeline.datasets.text import read_text, tokenize
from pipeline.errors import PipelineError
from pipeline.files import write_json


class VocabularyError(PipelineError):
    """The text cannot make a next-token training set."""


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


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser("pipeline.stages.vocabulary", __doc__)
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
