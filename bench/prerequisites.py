"""What the benchmark's phases need, checked before any of them runs: data, a data source for the clone, a commit.

PyTorch is not among them: without it the throughput phase says it is not measured.
"""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Collection, Mapping
from pathlib import Path

from pipeline.config import Params
from pipeline.errors import PipelineError
from pipeline.stages.fetch import MIRROR_ENV

# The fetch stages' layout of a mirror (pipeline.stages.fetch), for the line that asks for one.
MIRROR_HINT = (
    f"set {MIRROR_ENV} to an offline mirror laid out as mnist/<file>.gz and fable/<file> "
    "(README: Quick start), or leave the phase out with --skip repro"
)


def missing_prerequisites(
    params: Params,
    skip: Collection[str],
    environ: Mapping[str, str] = os.environ,
    source: Path = Path(),
    timeout: float = 5.0,
) -> list[str]:
    """One line for each thing a phase that will run needs and does not have, saying what to do; [] if none.

    The data is read with the pipeline's own readers (a file that is there but unreadable counts as
    missing). The full-repro phase (unless skipped) needs ``source`` to be a git repository with a commit
    and every data file to have a source that answers: see :func:`unreachable_data`.
    """
    from pipeline.datasets.splits import load_split
    from pipeline.datasets.text import load_vocabulary, read_text

    problems = []
    prepared, unreadable = params.paths.mnist.prepared, {}
    for split in ("train", "validation", "test"):
        try:
            load_split(prepared, split)
        except (OSError, ValueError) as error:
            unreadable[split] = f"{error.strerror}: {error.filename}" if isinstance(error, OSError) else str(error)
    if unreadable:
        problems.append(
            f"{prepared}: the prepared MNIST split(s) {', '.join(unreadable)} cannot be read "
            f"({next(iter(unreadable.values()))}): run `dvc repro` first"
        )
    if "fable" not in skip:
        for read in (lambda: read_text(params.paths.fable.raw), lambda: load_vocabulary(params.paths.fable.vocabulary)):
            try:
                read()
            except PipelineError as error:
                problems.append(f"{error}: run `dvc repro` first, or --skip fable")
    if "repro" not in skip:
        head = subprocess.run(["git", "-C", str(source), "rev-parse", "--verify", "-q", "HEAD"], capture_output=True)
        if head.returncode != 0:
            problems.append(
                f"the full-repro phase clones the last commit of {source.resolve()}, which has none "
                f"(not a git repository?): commit first, or leave the phase out with --skip repro"
            )
        unreachable = unreachable_data(params, environ.get(MIRROR_ENV) or None, timeout)
        if unreachable:
            problems.append(
                f"the full-repro phase's fresh clone fetches the data, and no source answers for "
                f"{', '.join(unreachable)} ({next(iter(unreachable.values()))}): {MIRROR_HINT}"
            )
    return problems


def unreachable_data(params: Params, mirror: str | None, timeout: float) -> dict[str, str]:
    """``{file name: "first source: why not"}`` for each data file none of whose fetch sources answers.

    The sources are pipeline.stages.fetch's own: ``mirror`` first, then params.yaml's. A local file must exist; a
    URL must answer its GET with a success within ``timeout`` seconds (only the headers are read, and a host
    that cannot be reached is asked once).
    """
    from pipeline.stages.fetch import fable_target, mnist_targets

    down: dict[str, str] = {}  # host -> why it cannot be reached
    unreachable = {}
    for target in [*mnist_targets(params, mirror), fable_target(params, mirror)]:
        reasons = []
        for source in target.sources:
            reason = _unanswered(source, timeout, down)
            if reason is None:
                break
            reasons.append(reason)
        else:
            unreachable[target.destination.name] = f"{target.sources[0]}: {reasons[0]}"
    return unreachable


def _unanswered(source: str, timeout: float, down: dict[str, str]) -> str | None:
    """Why ``source`` (a path or URL) cannot be fetched, or None if it is there."""
    parts = urllib.parse.urlsplit(source)
    if parts.scheme not in ("http", "https", "file"):
        return None if Path(source).is_file() else "no such file"
    if parts.netloc in down:
        return down[parts.netloc]
    try:
        with urllib.request.urlopen(source, timeout=timeout):  # closed after the headers: nothing downloaded
            return None
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code} {error.reason}"
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        down[parts.netloc] = f"cannot connect: {getattr(reason, 'strerror', None) or reason}"
        return down[parts.netloc]
