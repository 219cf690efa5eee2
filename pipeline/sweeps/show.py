"""``make sweep-show SPEC=…``: a sweep's trials as a table (number, state, params, metric, DVC experiment, MLflow
run), its best trial and the command that restores it; ``--md`` for a pull request."""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from pipeline.sweeps.spec import Spec
from pipeline.sweeps.study import retried_from


def rows(spec: Spec, study: optuna.Study) -> list[list[str]]:
    header = ["trial", "state", *spec.space, spec.metric, "DVC experiment", "MLflow run"]
    table = [header]
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda trial: trial.number):
        table.append(
            [
                str(trial.number),
                _state(trial),
                *(_value(trial.params.get(key)) for key in spec.space),
                "" if trial.value is None else f"{trial.value:.6g}",
                str(trial.user_attrs.get("dvc_experiment", "")),
                str(trial.user_attrs.get("mlflow_run", "")),
            ]
        )
    return table


def _state(trial: FrozenTrial) -> str:
    earlier = retried_from(trial)
    return trial.state.name + (f" (retry of {earlier[-1]})" if earlier else "")


def _value(value: object) -> str:
    return "" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def best(spec: Spec, study: optuna.Study) -> FrozenTrial | None:
    finished = [trial for trial in study.get_trials(deepcopy=False) if trial.state == TrialState.COMPLETE]
    if not finished:
        return None
    # The first of equal values: the same trial for every reader, whatever the order trials finished in.
    choose = max if spec.direction == "maximize" else min
    return choose(sorted(finished, key=lambda trial: trial.number), key=lambda trial: trial.value)


def render(spec: Spec, study: optuna.Study, markdown: bool = False) -> str:
    table = rows(spec, study)
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in table]
        lines.insert(1, "|" + "---|" * len(table[0]))
    else:
        widths = [max(len(row[column]) for row in table) for column in range(len(table[0]))]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in table
        ]
    top = best(spec, study)
    finished = sum(trial.state == TrialState.COMPLETE for trial in study.get_trials(deepcopy=False))
    title = f"sweep {spec.name}: {finished} of {spec.trials} trials finished ({spec.direction} {spec.metric})"
    summary = [title, ""] if markdown else [title]
    if top is None:
        return "\n".join([*summary, *lines, "", "best: none finished yet"])
    experiment = top.user_attrs.get("dvc_experiment", "")
    restore = f"dvc exp apply {experiment}" if experiment else "(no experiment recorded)"
    code = f"`{restore}`" if markdown else restore
    settings = ", ".join(f"{key}={_value(value)}" for key, value in top.params.items())
    tail = ["", f"best: trial {top.number} ({settings}), {spec.metric} = {top.value:.6g}; restore it with: {code}"]
    return "\n".join([*summary, *lines, *tail])
