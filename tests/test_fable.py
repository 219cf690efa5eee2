"""The fable task's pure pieces: windows, prompts, the original continuation."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.fable import PromptError, continuation_in_text, prompt_ids, windows

VOCABULARY = {"tokens": "word", "dictionary": {"the": 0, "cat": 1, "sat": 2, ".": 3}}


def test_windows_label_each_run_with_the_next_id():
    examples = windows([0, 1, 2, 3, 0], 3)
    np.testing.assert_array_equal(examples.x, [[0, 1, 2], [1, 2, 3]])
    np.testing.assert_array_equal(examples.y, [3, 0])


def test_prompt_ids():
    assert prompt_ids("the cat sat", VOCABULARY, 3) == [0, 1, 2]
    assert prompt_ids("cat sat.", VOCABULARY, 3) == [1, 2, 3]  # punctuation is a token


@pytest.mark.parametrize(
    "prompt, message",
    [
        ("the dog sat", r"prompt 'the dog sat': 'dog' not in the story's vocabulary"),
        ("the cat", r"prompt 'the cat' has 2 tokens \['the', 'cat'\]; the model reads exactly 3"),
        ("the cat sat down", r"has 4 tokens"),
    ],
)
def test_bad_prompts(prompt, message):
    with pytest.raises(PromptError, match=message):
        prompt_ids(prompt, VOCABULARY, 3)


def test_continuation_in_text():
    tokens = "a b c d e b c f".split()
    assert continuation_in_text(tokens, ["b", "c"], 2) == ["b", "c", "d", "e"]  # the first occurrence
    assert continuation_in_text(tokens, ["x", "y"], 2) is None
