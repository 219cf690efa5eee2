"""Tokenisation, the seed's frequency-ordered dictionary, and the accuracy ceiling."""

from __future__ import annotations

import pytest

from pipeline.datasets.text import tokenize
from pipeline.stages.vocabulary import (
    VocabularyError,
    accuracy_ceiling,
    build_dictionary,
    build_vocabulary,
)


def test_ids_by_descending_frequency_ties_by_first_occurrence():
    dictionary = build_dictionary(["b", "a", "c", "a", "b", "d"])
    # a and b both occur twice: b came first. c and d once: c came first.
    assert dictionary == {"b": 0, "a": 1, "c": 2, "d": 3}


def test_ceiling_counts_the_most_frequent_continuation_per_context():
    # Context (x,) is followed by a twice and b once: at best 2 of those 3 windows are right.
    tokens = ["x", "a", "x", "a", "x", "b"]
    ceiling = accuracy_ceiling(tokens, 1)
    assert (ceiling.best_correct, ceiling.windows) == (4, 5)


def test_the_fable(mirror):
    text = (mirror / "fable/belling_the_cat.txt").read_text()
    vocabulary = build_vocabulary(text, "word", 3, "fable")
    assert vocabulary["token_count"] == 204 and len(vocabulary["dictionary"]) == 112  # the seed's figures
    assert vocabulary["dictionary"][","] == 0 and vocabulary["dictionary"]["the"] == 1  # as in the seed
    assert (vocabulary["ceiling_correct"], vocabulary["windows"]) == (199, 201)
    assert vocabulary["reverse_dictionary"]["1"] == "the"
    assert tokenize(text, "word") == text.split()  # the fable is already spaced as the seed split it


@pytest.mark.parametrize(
    "text, n_input, message",
    [
        ("", 3, r"story\.txt: no word tokens: the text is empty"),
        ("   \n", 3, "the text is empty"),
        ("a b c", 3, r"story\.txt: 3 word tokens, but fable\.n_input = 3 needs at least 4"),
        ("a a a a a", 3, r"a vocabulary of one token \('a'\)"),
    ],
)
def test_unusable_texts(text, n_input, message):
    with pytest.raises(VocabularyError, match=message):
        build_vocabulary(text, "word", n_input, "story.txt")
