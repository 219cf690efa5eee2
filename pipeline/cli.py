"""What every ``python -m pipeline.…`` command shares: the --params and --debug options, error reporting in one
line, and durations as a person reads them."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Mapping

from pipeline.errors import PipelineError

DEBUG_ENV = "PIPELINE_DEBUG"


def debugging(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether errors show their traceback: ``--debug`` or ``PIPELINE_DEBUG=1``."""
    return environ.get(DEBUG_ENV, "") not in ("", "0")


class _Debug(argparse.Action):
    """``--debug``: the same as PIPELINE_DEBUG=1, for this process and the ones it starts."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, *args: object) -> None:
        os.environ[DEBUG_ENV] = "1"


def stage_parser(module: str, doc: str) -> argparse.ArgumentParser:
    """The parser of ``python -m <module>``: described by the module docstring's first paragraph, with --params."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml", help="the params file (default: %(default)s)")
    parser.add_argument("--debug", nargs=0, action=_Debug, help=f"show tracebacks (or {DEBUG_ENV}=1)")
    return parser


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``: what a person reads at a glance (progress lines,
    the benchmark's phases)."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


@contextlib.contextmanager
def run_stage(name: str) -> Iterator[None]:
    """Turn an error into one line on stderr and exit status 1, without a traceback (unless debugging).

    A :class:`PipelineError` says what is wrong with the input and where; anything else is unexpected
    and says so, with how to see its traceback.
    """
    # Under DVC stdout is a pipe: flush each line so per-epoch progress shows as it happens.
    sys.stdout.reconfigure(line_buffering=True)
    try:
        yield
    except PipelineError as error:
        if debugging():
            raise
        print(f"{name}: error: {error}", file=sys.stderr)
        sys.exit(1)
    except Exception as error:
        if debugging():
            raise
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(
            f"{name}: unexpected {type(error).__name__}: {first} (--debug or {DEBUG_ENV}=1 shows the traceback)",
            file=sys.stderr,
        )
        sys.exit(1)
