"""Stage evaluate: judge a trained model and write its metrics and reports.

Run::

    python -m pipeline.evaluate mnist   # test_accuracy, test_loss, test_accuracy_first128 + confusion matrix
    python -m pipeline.evaluate fable   # accuracy over every window, ceiling, loss + the generated story

With the kernels and threads of training (pipeline.numerics); the work itself is pipeline.evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.config import load_params
from pipeline.numerics import pin_for
from pipeline.stage import run_stage, stage_parser
from pipeline.tasks import TASK_NAMES


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser("pipeline.evaluate", __doc__)
    parser.add_argument("model", choices=TASK_NAMES)
    args = parser.parse_args(argv)
    with run_stage(f"evaluate {args.model}"):
        params = load_params(args.params)
        pin_for(params, args.model, f"evaluate {args.model}")
        from pipeline import evaluation  # noqa: PLC0415 - TensorFlow loads here, after its kernels are pinned
        from pipeline.tasks import get_task  # noqa: PLC0415

        evaluation.run(get_task(args.model), params)


if __name__ == "__main__":
    main()
