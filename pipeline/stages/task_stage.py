"""What the per-model stages (train, evaluate) share: ``python -m pipeline.stages.<stage> MODEL``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pipeline.cli import run_stage, stage_parser
from pipeline.config import Params, load_params
from pipeline.model.numerics import pin_for
from pipeline.tasks.base import TASK_NAMES, Task
from pipeline.tasks.registry import get_task


def run_task_stage(
    stage: str, doc: str, work: Callable[[Task, Params], None], argv: Sequence[str] | None = None
) -> None:
    """Params read and checked, TensorFlow's kernels and threads pinned as they say (pipeline.model.numerics),
    then ``work(task, params)``, which may import TensorFlow."""
    parser = stage_parser(f"pipeline.stages.{stage}", doc)
    parser.add_argument("model", choices=TASK_NAMES)
    args = parser.parse_args(argv)
    with run_stage(f"{stage} {args.model}"):
        params = load_params(args.params)
        pin_for(params, args.model, f"{stage} {args.model}")
        work(get_task(args.model), params)
