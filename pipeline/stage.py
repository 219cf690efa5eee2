"""What every ``python -m pipeline.<stage>`` entry point shares: the --params option and error reporting."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator

from pipeline.errors import PipelineError


def stage_parser(module: str, doc: str) -> argparse.ArgumentParser:
    """The parser of ``python -m <module>``: described by the module docstring's first paragraph, with --params."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml", help="the params file (default: %(default)s)")
    return parser


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

