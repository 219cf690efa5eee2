"""Sweeps on many workers: ``python -m pipeline.sweeps run SPEC`` (one worker: ``make sweep SPEC=…``) and
``python -m pipeline.sweeps show SPEC [--md]`` (``make sweep-show SPEC=…``).

The study lives in $PIPELINE_SWEEP_STORAGE (the team's PostgreSQL, set by .team/env) or else in the project's
.sweeps/optuna.db; each trial is a DVC experiment named <sweep>-<trial> and an MLflow run tagged with the sweep."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import yaml

from pipeline.cli import run_stage, stage_parser
from pipeline.files import read_text
from pipeline.sweeps import show, study, worker
from pipeline.sweeps.spec import check_against_params, load_spec


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("pipeline.sweeps", __doc__)
    parser.add_argument("command", choices=["run", "show"], help="run a worker, or show the study")
    parser.add_argument("spec", type=Path, help="the sweep spec, e.g. sweeps/fable-units.yaml")
    parser.add_argument("--md", action="store_true", help="show: a Markdown table, for a pull request")
    arguments: argparse.Namespace = parser.parse_args(argv)
    with run_stage(f"sweep {arguments.command}"):
        spec = load_spec(arguments.spec)
        root = Path.cwd()
        check_against_params(spec, arguments.spec, yaml.safe_load(read_text(root / arguments.params)))
        if arguments.command == "run":
            worker.run(spec, arguments.spec, root)
        else:
            url = study.storage_url(root, os.environ)
            print(show.render(spec, study.open_study(spec, url, arguments.spec), markdown=arguments.md))


if __name__ == "__main__":
    main()
