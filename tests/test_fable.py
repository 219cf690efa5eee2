"""The fable task: windows, the original continuation, and another story (English, Chinese) through params alone."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from pipeline.tasks.fable import continuation_in_text, windows


def test_windows_label_each_run_with_the_next_id():
    examples = windows([0, 1, 2, 3, 0], 3)
    np.testing.assert_array_equal(examples.x, [[0, 1, 2], [1, 2, 3]])
    np.testing.assert_array_equal(examples.y, [3, 0])


def test_continuation_in_text():
    tokens = ["a", "b", "c", "d", "e", "b", "c", "f"]
    assert continuation_in_text(tokens, ["b", "c"], 2) == ["b", "c", "d", "e"]  # the first occurrence
    assert continuation_in_text(tokens, ["x", "y"], 2) is None


# --- another story through params alone ----------------------------------------------------------------

FOX = (
    "a hungry fox saw some fine bunches of grapes hanging from a vine that was trained along a high "
    "trellis , and did his best to reach them by jumping as high as he could into the air . but it was all "
    "in vain , for they were just out of reach : so he gave up trying , and walked away with an air of "
    "dignity and unconcern , remarking , i thought those grapes were ripe , but i see now they are quite "
    "sour . it is easy to despise what you cannot get .\n"
)
# The same fable in Chinese, read one character at a time (data.fable.tokens: char).
FOX_ZH = (
    "一只饥饿的狐狸看见葡萄架上挂着一串串熟透的葡萄。它跳了又跳，想摘下葡萄，可是怎么也够不着。"
    "最后它只好走开，一边走一边说：这些葡萄一定是酸的，我才不想吃呢。得不到的东西，人们常说它不好。\n"
)


@pytest.mark.slow
@pytest.mark.minutes(1.4)
@pytest.mark.parametrize(("text", "tokens"), [(FOX, "word"), (FOX_ZH, "char")])
def test_another_story_needs_only_its_url_and_sha256(project, text, tokens):
    story_file = project.root / "story.txt"
    story_file.write_text(text, encoding="utf-8")

    def other_story(raw: dict) -> None:
        raw["data"]["fable"].update(url="story.txt", sha256=hashlib.sha256(text.encode()).hexdigest(), tokens=tokens)

    project.edit_params(other_story)
    project.dvc("repro", "evaluate_fable")
    metrics = json.loads((project.root / "metrics/fable.json").read_text())
    assert metrics["accuracy"] == metrics["ceiling"]  # the default settings learn another text too
    story = (project.root / "metrics/fable_story.txt").read_text(encoding="utf-8")
    start = text.split()[:3] if tokens == "word" else list(text[:3])
    if tokens == "word":
        assert story.split()[:3] == start
    else:
        assert story.startswith("".join(start)) and " " not in story  # characters written as they are
    generated = project.python("-m", "pipeline.generate", "--words", "4").stdout.strip()
    if tokens == "word":
        assert generated.split() == story.split()[:7]
    else:
        assert generated == story.strip()[:7]
