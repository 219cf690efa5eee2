"""Stage train: fit one model as params.yaml says, save it and record it as an MLflow run.

Run::

    python -m pipeline.train mnist
    python -m pipeline.train fable

TensorFlow loads only after pipeline.numerics has pinned its kernels and threads; the training loop
itself is pipeline.training.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.config import load_params
from pipeline.numerics import pin_for
from pipeline.stage import run_stage, stage_parser
from pipeline.tasks import TASK_NAMES


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser("pipeline.train", __doc__)
    parser.add_argument("model", choices=TASK_NAMES)
    args = parser.parse_args(argv)
    with run_stage(f"train {args.model}"):
        params = load_params(args.params)
        pin_for(params, args.model, f"train {args.model}")
        from pipeline import training  # noqa: PLC0415 - TensorFlow loads here, after its kernels are pinned
        from pipeline.tasks import get_task  # noqa: PLC0415

        training.run(get_task(args.model), params)


if __name__ == "__main__":
    main()
