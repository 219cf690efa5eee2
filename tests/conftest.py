"""Shared fixtures: the real params.yaml, the offline mirror, loopback HTTP servers, and project copies."""

from __future__ import annotations

import contextlib
import copy
import http.server
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]
# The test seam for kill -9 at an exact point of training (tests/faults/sitecustomize.py).
FAULTS = ROOT / "tests" / "faults"
# The team stack's fixtures live beside this file.
pytest_plugins = ["team_fixtures"]


def kill_at(point: str) -> dict[str, str]:
    """Environment for one command whose train stage kills itself at ``point`` (EPOCH:BATCH or EPOCH:checkpoint)."""
    return {"PIPELINE_KILL_AT": point, "PYTHONPATH": str(FAULTS)}


# What a project copy needs to run `dvc repro`: the code, the pipeline and its configuration.
PROJECT_FILES = ("pipeline", "bench", "dvc.yaml", "params.yaml", ".dvcignore", ".dvc/config", ".gitignore", "Makefile")


@pytest.fixture(autouse=True)
def _restore_environment() -> Iterator[None]:
    """Each test gets the environment the session started with: ``mlflow.set_tracking_uri`` exports
    ``MLFLOW_TRACKING_URI``, and a later project copy would otherwise log its runs into that store."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def params_raw() -> dict:
    """params.yaml as parsed YAML; tests deep-copy and shrink it, never write a parallel config."""
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.fixture
def raw(params_raw: dict) -> dict:
    return copy.deepcopy(params_raw)


@pytest.fixture
def small_model(params_raw: dict) -> Callable[..., Any]:
    """Builds the pipeline's network, tiny (2 LSTM layers of 4 units, 5 steps of 3 features, 4 classes), seeded."""

    def build(parallel_slices: int = 1):
        import keras

        from pipeline.config import parse_params
        from pipeline.model.network import recurrent_classifier, seed_everything

        raw = copy.deepcopy(params_raw)
        raw["mnist"].update(units=4, layers=2, parallel_slices=parallel_slices)
        seed_everything(0)
        inputs = keras.Input(shape=(5, 3), name="steps")
        return recurrent_classifier(inputs, inputs, parse_params(raw).mnist, classes=4, name="small")

    return build


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store with its schema migrated, made once: creating one costs seconds."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("migrated") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store_uri(tmp_path: Path, migrated_store: Path) -> str:
    """A fresh, empty SQLite tracking store of this test's own (a copy of the migrated one)."""
    shutil.copyfile(migrated_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path}/mlflow.db"


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The offline mirror: $PIPELINE_MIRROR, else ../shared/mirror beside the project."""
    path = Path(os.environ.get("PIPELINE_MIRROR") or ROOT.parent / "shared" / "mirror")
    if not (path / "mnist").is_dir():
        pytest.skip(f"no offline mirror at {path} (set PIPELINE_MIRROR)")
    return path.resolve()


# --- a loopback HTTP server whose answers each test scripts -------------------------------------------


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    delay: float = 0.0  # seconds to stall before answering: a server that hangs
    content_length: int | None = None  # announce a length other than the body's: a cut-off transfer


@dataclass
class LoopbackServer:
    base_url: str
    routes: dict[str, Route] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)


@pytest.fixture
def http_server() -> Iterator[LoopbackServer]:
    """An HTTP server on 127.0.0.1 serving ``routes``; shut down when the test ends."""
    state = LoopbackServer(base_url="")
    stop = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits.append(self.path)
            route = state.routes.get(self.path, Route(b"not found", status=404))
            stop.wait(route.delay)
            try:
                self.send_response(route.status)
                length = route.content_length if route.content_length is not None else len(route.body)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(route.body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    stop.set()
    server.shutdown()
    server.server_close()


# --- a copy of the project where DVC stages really run ------------------------------------------------


@dataclass
class ProjectCopy:
    root: Path
    env: dict[str, str]
    # Where its MLflow store was made: the experiments keep their artifacts there, also in a copy of the store.
    store_made_in: Path | None = None

    def params(self) -> dict:
        return yaml.safe_load((self.root / "params.yaml").read_text())

    def write_params(self, raw: dict) -> None:
        (self.root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))

    def edit_params(self, edit: Callable[[dict], None]) -> None:
        raw = self.params()
        edit(raw)
        self.write_params(raw)

    def runs(self, experiment: str, store: str | None = None) -> list:
        """The MLflow runs of ``experiment``, oldest first, in the copy's own store (or ``store``, a tracking URI)."""
        import mlflow

        mlflow.set_tracking_uri(store or f"sqlite:///{self.root}/mlflow.db")
        return mlflow.search_runs(
            experiment_names=[experiment], output_format="list", order_by=["attributes.start_time ASC"]
        )

    def run(
        self, *command: str, check: bool = True, timeout: float = 1200, env_extra: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            command,
            cwd=self.root,
            env={**self.env, **(env_extra or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def dvc(self, *arguments: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "dvc", *arguments, check=check)

    def python(self, *arguments: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(sys.executable, *arguments, check=check)

    def copy_to(self, root: Path, **env_extra: str) -> ProjectCopy:
        """A private copy at ``root`` (git, DVC cache and MLflow store included) to change; ``env_extra`` added
        to its commands' environment."""
        shutil.copytree(self.root, root, symlinks=True)
        return ProjectCopy(root=root, env={**self.env, **env_extra}, store_made_in=self.store_made_in or self.root)


def project_environment(mirror: Path) -> dict[str, str]:
    """What a project copy's commands run with: the offline mirror, this venv first on PATH, a git identity.

    A copy tracks into its own mlflow.db unless a test says otherwise (env_extra, ProjectCopy.env).
    """
    # Not MLflow's settings of this process, nor the OpenMP ones TensorFlow's import here put in os.environ
    # (a user's shell has neither; the stages would print that they ignore them).
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("MLFLOW_") and key not in ("KMP_DUPLICATE_LIB_OK", "KMP_INIT_AT_FORK")
    }
    env.update(
        PIPELINE_MIRROR=str(mirror),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.invalid",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.invalid",
        # System metrics every second (MLflow's default: 10), so that the short shrunken trainings have some.
        MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL="1",
    )
    return env


def make_project_copy(destination: Path, mirror: Path) -> ProjectCopy:
    """The project's code and pipeline in a fresh git repository at ``destination``."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        source, target = ROOT / name, destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    project = ProjectCopy(root=destination, env=project_environment(mirror))
    project.run("git", "init", "-q")
    # DVC experiments commit too (through pygit2, which reads git config, not the environment).
    project.run("git", "config", "user.name", "test")
    project.run("git", "config", "user.email", "test@example.invalid")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "copy")
    return project


def clone_project(source: Path, destination: Path, env: dict[str, str]) -> ProjectCopy:
    """`git clone` of the project at ``source``, with the matrix product's library that the clone's `make setup`
    would build from the same sources: this checkout's build (a build of other sources, e.g. uncommitted
    edits, stops the train stage with one line when it loads)."""
    from pipeline.model.detgemm import LIBRARY, PACKAGE

    subprocess.run(["git", "clone", "-q", str(source), str(destination)], check=True)
    library = (PACKAGE / LIBRARY).relative_to(ROOT)
    shutil.copy2(ROOT / library, destination / library)
    return ProjectCopy(root=destination, env=dict(env))


@pytest.fixture
def project(tmp_path: Path, mirror: Path) -> ProjectCopy:
    return make_project_copy(tmp_path / "project", mirror)


def shrink(raw: dict) -> dict:
    """The real params.yaml on tiny settings: a few hundred images, small networks, two epochs."""
    raw["data"]["mnist"]["split"].update(validation_size=100, train_size=300, test_size=200)
    raw["mnist"].update(units=16, batch_size=64, epochs=2)
    raw["fable"].update(units=32, batch_size=32, epochs=2)
    return raw


def train_shrunken(root: Path, mirror: Path) -> ProjectCopy:
    project = make_project_copy(root, mirror)
    project.edit_params(shrink)
    project.run("git", "commit", "-qam", "shrunken params")
    project.dvc("repro")
    return project


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory: pytest.TempPathFactory, mirror: Path, worker_id: str) -> ProjectCopy:
    """A project copy on shrunken params after one full `dvc repro`. Shared: tests only read it.

    Trained once per test session: under make test's workers (pytest-xdist), the first that needs it trains
    it in their common temporary directory, under a lock, and each worker reads a copy of its own (two DVC
    commands in one repository at once would wait for each other's lock)."""
    if worker_id == "master":  # no workers
        return train_shrunken(tmp_path_factory.mktemp("trained") / "project", mirror)
    shared = tmp_path_factory.getbasetemp().parent / "trained"
    with FileLock(f"{shared}.lock"):
        if not (shared / "done").exists():
            shutil.rmtree(shared, ignore_errors=True)  # what a failed attempt left
            train_shrunken(shared / "project", mirror)
            (shared / "done").touch()
    return ProjectCopy(shared / "project", project_environment(mirror)).copy_to(
        tmp_path_factory.mktemp("trained") / "project"
    )


@pytest.fixture
def trained_copy(trained_project: ProjectCopy, tmp_path: Path) -> ProjectCopy:
    """A private copy of the trained project (git, DVC cache and MLflow store included) to change."""
    return trained_project.copy_to(tmp_path / "project")


# --- the quick loop: `pytest -m "not slow"` ------------------------------------------------------------

# Fixtures that run real DVC stages (a trained project takes a minute to build): a test using one is slow.
SLOW_FIXTURES = frozenset({"trained_project", "trained_copy"})


def minutes(item: pytest.Item) -> float:
    """How long a test runs, about: its ``minutes`` mark, else half a minute for a slow one, else none."""
    marker = item.get_closest_marker("minutes")
    if marker is not None:
        return float(marker.args[0])
    return 0.5 if item.get_closest_marker("slow") else 0.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow marks for the fixtures above; then the longest tests first. pytest-xdist hands tests to make test's
    workers in this order, so a multi-minute test never starts last while the other worker idles, and the short
    ones fill the end. The sort is stable: pytest-randomly's shuffle (which runs before this hook) still decides
    the order among tests of one length."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    items.sort(key=minutes, reverse=True)


# --- servers the tests start on 127.0.0.1 ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args} exited with {process.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2):
            return
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout} s")


def stack_directory() -> Path:
    """A new directory for a team stack (pipeline.team.stack) under /tmp, which PostgreSQL, run as ``nobody`` when
    the tests run as root, can reach (pytest's own temporary directories are private to their owner)."""
    directory = Path(tempfile.mkdtemp(prefix="team-", dir="/tmp"))
    directory.chmod(0o755)
    return directory
