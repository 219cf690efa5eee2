"""Stage params: check all of params.yaml whenever the file changes.

Run::

    python -m pipeline.stages.params

A mistyped key, or 3.0 where an integer belongs (which DVC's own params comparison takes as equal to 3),
fails ``dvc repro`` here instead of being ignored by the stages, which track only the keys they read.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.cli import run_stage, stage_parser
from pipeline.config import load_params


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser("pipeline.stages.params", __doc__)
    args = parser.parse_args(argv)
    with run_stage("params"):
        load_params(args.params)
        print(f"{args.params}: valid")


if __name__ == "__main__":
    main()
