"""Tokens of a story (words or characters) and back, and the prompt a story starts from."""

from __future__ import annotations

import pytest

from pipeline.datasets.text import (
    PromptError,
    TextError,
    detokenize,
    load_vocabulary,
    prompt_tokens,
    read_text,
    tokenize,
)

VOCABULARY = {"tokens": "word", "dictionary": {"the": 0, "cat": 1, "sat": 2, ".": 3}}


def test_word_tokens_split_punctuation_off():
    assert tokenize("the cat, she said. don't!", "word") == ["the", "cat", ",", "she", "said", ".", "don't", "!"]


def test_char_tokens_for_a_chinese_sentence():
    assert tokenize("老鼠们 开了一个会，", "char") == ["老", "鼠", "们", "开", "了", "一", "个", "会", "，"]


def test_prompt_tokens_from_the_prompt_or_the_texts_start():
    assert prompt_tokens("the cat sat", [], VOCABULARY, 3) == ["the", "cat", "sat"]
    assert prompt_tokens("cat sat.", [], VOCABULARY, 3) == ["cat", "sat", "."]  # punctuation is a token
    assert prompt_tokens(None, ["sat", ".", "the", "cat"], VOCABULARY, 3) == ["sat", ".", "the"]


def test_stories_are_written_as_their_tokens_were_read():
    assert detokenize(["the", "cat", "."], "word") == "the cat ."
    assert detokenize(list("猫は座った。"), "char") == "猫は座った。"


@pytest.mark.parametrize(
    "prompt, message",
    [
        ("the dog sat", r"prompt 'the dog sat': 'dog' not in data/vocabulary/fable.json"),
        ("the cat", r"prompt 'the cat' has 2 tokens \['the', 'cat'\]; the model reads exactly 3"),
        ("the cat sat down", r"has 4 tokens"),
    ],
)
def test_bad_prompts(prompt, message):
    with pytest.raises(PromptError, match=message):
        prompt_tokens(prompt, [], VOCABULARY, 3, "data/vocabulary/fable.json")


def test_unreadable_story_and_vocabulary_name_their_file(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(TextError, match=r"latin1\.txt: not UTF-8 text: unexpected end of data at byte 3"):
        read_text(tmp_path / "latin1.txt")
    with pytest.raises(TextError, match=r"absent\.txt: cannot read: No such file or directory"):
        read_text(tmp_path / "absent.txt")
    (tmp_path / "fable.json").write_text('{"tokens": ')
    with pytest.raises(TextError, match=r"fable\.json: not JSON: Expecting value \(line 1\)"):
        load_vocabulary(tmp_path / "fable.json")
