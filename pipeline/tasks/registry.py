"""The task table: each model's module defines its ``TASK``; this module lists them (they never import it)."""

from __future__ import annotations

from pipeline.errors import PipelineError
from pipeline.tasks.base import TASK_NAMES, Task


def get_task(name: str) -> Task:
    """The task ``name``; its module is imported only now, after the stage pinned TensorFlow's kernels."""
    if name == "mnist":
        from pipeline.tasks.mnist import TASK  # noqa: PLC0415 - TensorFlow loads after pipeline.model.numerics.pin
    elif name == "fable":
        from pipeline.tasks.fable import TASK  # noqa: PLC0415 - TensorFlow loads after pipeline.model.numerics.pin
    else:
        raise PipelineError(f"unknown model {name!r}: expected one of {', '.join(TASK_NAMES)}")
    return TASK
