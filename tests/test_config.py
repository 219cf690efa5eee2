"""params.yaml validation: each class of bad value fails with one line naming the key and the value."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import ParamsError, load_params, parse_params


def test_the_real_params_file_is_valid():
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    assert params.fable.n_input == 3
    assert params.data.mnist.split.validation_size == 5000
    assert params.data.mnist.split.train_size == 55000
    # The cap lets through the largest file the pipeline fetches: MNIST's training images, decompressed.
    assert params.data.max_download_mib * 2**20 >= 47_040_016


def test_params_are_frozen(raw):
    params = parse_params(raw)
    with pytest.raises(Exception, match="frozen"):
        params.fable.n_input = 4


# One of each class of invalid value; test_reliability.py sends them through `dvc repro` too.
BAD_VALUES = [
    # YAML 1.1 reads 1e-3 as a string: a classic silent bug, refused with a hint.
    (lambda r: r["fable"].__setitem__("n_input", "3"), r"params\.yaml: fable\.n_input: .*got '3' \(str\)"),
    (lambda r: r["fable"].__setitem__("n_input", -3), r"params\.yaml: fable\.n_input: .*greater than 0, got -3"),
    (lambda r: r["fable"].__setitem__("n_input", 0), r"fable\.n_input: .*greater than 0, got 0"),
    (lambda r: r["fable"].__setitem__("n_inputs", 3), r"params\.yaml: fable\.n_inputs: unknown key \(a typo\?\)"),
    (
        lambda r: r["data"]["mnist"]["split"].__setitem__("validation_size", 60000),
        r"data\.mnist\.split: validation_size \+ train_size = 60000 \+ \d+ exceeds the 60000",
    ),
    (lambda r: r["data"]["mnist"]["split"].__setitem__("test_size", 10001), r"test_size = 10001 exceeds"),
    (lambda r: r["data"]["fable"].__setitem__("tokens", "words"), r"data\.fable\.tokens: .*got 'words'"),
    (lambda r: r["data"]["fable"].__setitem__("sha256", "abc"), r"data\.fable\.sha256: .*got 'abc'"),
    (lambda r: r["data"]["mnist"].__setitem__("mirrors", []), r"data\.mnist\.mirrors: "),
    (lambda r: r["paths"]["mnist"].pop("raw"), r"paths\.mnist\.raw: missing"),
    (lambda r: r["fable"].__setitem__("n_input", 3.0), r"fable\.n_input: .*got 3\.0 \(float\)"),
    (
        lambda r: r["mnist"].__setitem__("parallel_slices", 0),
        r"params\.yaml: mnist\.parallel_slices: .*greater than 0, got 0",
    ),
]


@pytest.mark.parametrize("edit, expected", BAD_VALUES)
def test_bad_values_fail_with_one_line_naming_key_and_value(raw, edit, expected):
    edit(raw)
    with pytest.raises(ParamsError) as error:
        parse_params(raw)
    message = str(error.value)
    assert len(message.splitlines()) == 1, message
    assert __import__("re").search(expected, message), message


# Not in BAD_VALUES (which test_reliability.py also sends through `dvc repro`): the same validation as
# every other positive integer, so these classes are already covered there.
@pytest.mark.parametrize(
    "value, expected",
    [
        (0, r"greater than 0, got 0 \(int\)"),
        (-256, r"greater than 0, got -256 \(int\)"),
        ("256", r"got '256' \(str\)"),
        (256.0, r"got 256\.0 \(float\)"),
        (None, r"got None \(NoneType\)"),
    ],
)
def test_the_download_cap_must_be_a_positive_integer(raw, value, expected):
    raw["data"]["max_download_mib"] = value
    with pytest.raises(ParamsError) as error:
        parse_params(raw)
    message = str(error.value)
    assert len(message.splitlines()) == 1, message
    assert __import__("re").match(r"params\.yaml: data\.max_download_mib: .*" + expected + "$", message), message


def test_the_download_cap_is_required(raw):
    del raw["data"]["max_download_mib"]
    with pytest.raises(ParamsError, match=r"^params\.yaml: data\.max_download_mib: missing$"):
        parse_params(raw)


def test_float_written_as_1e_minus_3_gets_a_hint():
    from pipeline.config import _describe

    line = _describe(
        "params.yaml",
        {
            "loc": ("mnist", "learning_rate"),
            "type": "float_type",
            "msg": "Input should be a valid number",
            "input": "1e-3",
        },
    )
    assert line.startswith("params.yaml: mnist.learning_rate: input should be a valid number, got '1e-3' (str)")
    assert "1.0e-3" in line


def test_each_problem_gets_its_own_line(raw):
    raw["fable"]["n_input"] = -1
    raw["fable"]["typo"] = 1
    with pytest.raises(ParamsError) as error:
        parse_params(raw)
    assert len(str(error.value).splitlines()) == 2


def test_unreadable_and_malformed_files_name_the_file(tmp_path):
    with pytest.raises(ParamsError, match=r"missing\.yaml: cannot read"):
        load_params(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("fable:\n  n_input: [3\n")
    with pytest.raises(ParamsError, match=r"broken\.yaml: not valid YAML \(line \d+\)"):
        load_params(broken)


def test_yaml_1e_minus_3_really_is_a_string():
    # Why the hint exists: PyYAML (YAML 1.1) needs a dot for a float.
    assert yaml.safe_load("x: 1e-3")["x"] == "1e-3"
    assert yaml.safe_load("x: 1.0e-3")["x"] == 0.001
