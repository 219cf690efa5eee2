"""A sweep spec (``sweeps/*.yaml``): the study's name, whose metric it optimises, the sampler, and the params.yaml
keys it fixes and searches; validated like params.yaml, every problem one line naming the file and the key."""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from pipeline.config import ParamsError, parse_params
from pipeline.errors import PipelineError
from pipeline.files import read_text
from pipeline.tasks.base import TASK_NAMES

Scalar = bool | int | float | str | None


class SpecError(PipelineError):
    """A sweep spec that is missing, not YAML, or has a key or value a sweep cannot use."""


class Range(BaseModel):
    """A numeric range: integers when both ends are, else floats; ``log`` samples evenly in log space."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    low: int | float
    high: int | float
    log: bool = False

    @property
    def integer(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int)


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    # The study; prefix of each trial's DVC experiment and MLflow run (<name>-<trial number>).
    name: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,47}$")]
    model: Literal[TASK_NAMES]  # type: ignore[valid-type]
    metric: Annotated[str, StringConstraints(min_length=1)]
    direction: Literal["maximize", "minimize"]
    trials: Annotated[int, Field(gt=0)]  # finished trials at which the study stops
    sampler: Literal["grid", "tpe", "random"]
    fixed: dict[str, Scalar] = {}
    space: Annotated[dict[str, list[Scalar] | Range], Field(min_length=1)]

    def grid(self) -> dict[str, list[Scalar]]:
        """The grid sampler's search space (every value of ``space`` is a list of choices then)."""
        return {key: list(values) for key, values in self.space.items() if isinstance(values, list)}

    def overrides(self, values: dict[str, Any]) -> dict[str, Any]:
        """The params.yaml keys a trial sets: the fixed ones and the trial's own values."""
        return {**self.fixed, **values}


def load_spec(path: str | Path) -> Spec:
    """Read and validate ``path`` against its own schema and params.yaml (beside the spec's project); raise
    :class:`SpecError` naming every bad key."""
    path = Path(path)
    text = read_text(path, SpecError)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML: {getattr(error, 'problem', error)}") from None
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as error:
        raise SpecError("\n".join(_describe(path, item) for item in error.errors())) from None
    return spec


def check_against_params(spec: Spec, path: str | Path, params_raw: dict) -> None:
    """Every key of ``fixed`` and ``space`` is a params.yaml setting, and every value the sweep may set passes
    params.yaml's validation; a grid has at least ``trials`` points."""
    problems: list[str] = []
    flat = _leaves(params_raw)
    for section in ("fixed", "space"):
        for key in getattr(spec, section):
            if key not in flat:
                problems.append(
                    f"{path}: {section}.{key}: not a key of params.yaml (keys are dotted, e.g. fable.units)"
                )
    for key in set(spec.fixed) & set(spec.space):
        problems.append(f"{path}: {key}: both fixed and searched")
    if spec.sampler == "grid":
        ranges = [key for key, values in spec.space.items() if not isinstance(values, list)]
        problems += [f"{path}: space.{key}: the grid sampler takes a list of choices, not a range" for key in ranges]
        size = math.prod(len(values) for values in spec.grid().values())
        if not ranges and spec.trials > size:
            problems.append(f"{path}: trials: {spec.trials} is more than the grid's {size} points")
    for key, values in spec.space.items():
        if isinstance(values, Range):
            problems += _range_problems(path, key, values)
        elif not values:
            problems.append(f"{path}: space.{key}: an empty list of choices")
        elif len({repr(value) for value in values}) < len(values):
            problems.append(f"{path}: space.{key}: a choice listed twice")
    if problems:
        raise SpecError("\n".join(problems))
    # Each value alone, with the fixed ones: the message names the spec's key, as params.yaml's check words it.
    for key, value in _candidates(spec):
        raw = copy.deepcopy(params_raw)
        for name, setting in spec.overrides({key: value} if key else {}).items():
            _set(raw, name, setting)
        try:
            parse_params(raw, source=str(path))
        except ParamsError as error:
            where = f"space.{key} = {value!r}" if key else "fixed"
            raise SpecError(f"{path}: {where}: {str(error).splitlines()[0].split(': ', 1)[1]}") from None


def _candidates(spec: Spec) -> list[tuple[str | None, Any]]:
    chosen: list[tuple[str | None, Any]] = [(None, None)]
    for key, values in spec.space.items():
        ends = [values.low, values.high] if isinstance(values, Range) else values
        chosen += list(itertools.product([key], ends))
    return chosen


def _range_problems(path: Path, key: str, span: Range) -> list[str]:
    if not span.low < span.high:
        return [f"{path}: space.{key}: low {span.low!r} is not below high {span.high!r}"]
    if span.log and span.low <= 0:
        return [f"{path}: space.{key}: a log range needs low > 0, got {span.low!r}"]
    return []


def _leaves(raw: Any, prefix: str = "") -> set[str]:
    """The dotted keys of params.yaml's settings (``fable.units``), not of its sections."""
    if not isinstance(raw, dict):
        return {prefix.rstrip(".")}
    return {leaf for key, value in raw.items() for leaf in _leaves(value, f"{prefix}{key}.")}


def _set(raw: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        raw = raw[part]
    raw[last] = value


def _describe(path: Path, item: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in item["loc"]) or "(top level)"
    if item["type"] == "extra_forbidden":
        return f"{path}: {key}: unknown key (a typo?)"
    if item["type"] == "missing":
        return f"{path}: {key}: missing"
    message = item["msg"][0].lower() + item["msg"][1:]
    return f"{path}: {key}: {message}, got {item.get('input')!r}"
