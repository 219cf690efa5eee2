"""What every ``python -m pipeline.<stage>`` entry point shares: the --params option and error reporting."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator

from pipeline.errors import PipelineError


def add_params_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="the params file (default: %(default)s)")


@contextlib.contextmanager
def run_stage(name: str) -> Iterator[None]:
    """Turn a :class:`PipelineError` into its message on stderr and exit status 1, without a traceback."""
    # Under DVC stdout is a pipe: flush each line so per-epoch progress shows as it happens.
    sys.stdout.reconfigure(line_buffering=True)
    try:
        yield
    except PipelineError as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        sys.exit(1)
