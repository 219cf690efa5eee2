"""The Optuna study behind a sweep: where it is stored, how a worker joins it, and how it hands out trials so that
a worker killed at any moment loses nothing (its trial's heartbeat stops; the next worker to ask fails it and
retries its params as a new trial) and no trial is handed out beyond ``trials``."""

from __future__ import annotations

import contextlib
import json
import threading
import warnings
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import optuna
from filelock import FileLock
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from pipeline.sweeps.spec import Range, Spec, SpecError

STORAGE_ENV = "PIPELINE_SWEEP_STORAGE"  # set by .team/env: the team's PostgreSQL, with the person's login
LOCAL_DIRECTORY = ".sweeps"  # git-ignored: the local store, the ask lock, the trials' logs
HEARTBEAT_S = 5  # a running trial's worker writes its heartbeat this often
GRACE_S = 20  # a trial without a heartbeat for this long is failed, and its params retried
MAX_RETRIES = 2  # a trial that keeps failing (not a killed worker: its own error) stops the sweep after this
DONE, WAIT = "done", "wait"


def local_directory(root: Path) -> Path:
    directory = root / LOCAL_DIRECTORY
    directory.mkdir(exist_ok=True)
    return directory


def storage_url(root: Path, environ: Mapping[str, str]) -> str:
    """``$PIPELINE_SWEEP_STORAGE`` (a team's PostgreSQL), else a SQLite file in the project's ``.sweeps/``."""
    return environ.get(STORAGE_ENV) or f"sqlite:///{local_directory(root) / 'optuna.db'}"


def describe_storage(url: str) -> str:
    """Where the study is, for the worker's first line: the database without its password."""
    from sqlalchemy.engine import make_url  # noqa: PLC0415 - with optuna, already loaded

    shown = make_url(url).render_as_string(hide_password=True)
    kind = "a local store" if url.startswith("sqlite") else "the team's database"
    return f"{kind} ({shown})"


def open_study(spec: Spec, url: str, spec_path: Path) -> optuna.Study:
    """The study named ``spec.name`` (created by the first worker), with heartbeats and retries of dead trials; one
    line naming the spec when the stored study was made from another one."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Heartbeats with ask and tell are what Optuna documents for workers that run trials in other processes; its
    # warnings that they are experimental, or meant for optimize(), say nothing to the person running a sweep.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    storage = RDBStorage(
        url,
        engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True},
        heartbeat_interval=HEARTBEAT_S,
        grace_period=GRACE_S,
        heartbeat_stale_trial_callback=retry,
    )
    study = optuna.create_study(
        study_name=spec.name, storage=storage, sampler=sampler(spec), direction=spec.direction, load_if_exists=True
    )
    ours = json.loads(spec.model_dump_json())
    stored = study.user_attrs.get("spec")
    if stored is None:
        study.set_user_attr("spec", ours)
    elif stored != ours:
        raise SpecError(
            f"{spec_path}: study {spec.name!r} exists in the storage with another spec: "
            "give this one another name (or delete the study)"
        )
    return study


class _Grid(optuna.samplers.GridSampler):
    """Optuna's grid, without its ``study.stop()`` once every point is taken (which only ``optimize`` may call):
    :func:`next_trial` decides when the study is done."""

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        return None


def sampler(spec: Spec) -> optuna.samplers.BaseSampler:
    # The grid's points are handed out by trial number (Optuna gives trial n grid point n of its grid, shuffled
    # by the same seed in every worker), so workers never take the same point; random and TPE samplers draw
    # independently in each worker.
    if spec.sampler == "grid":
        return _Grid(spec.grid(), seed=0)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler()
    return optuna.samplers.TPESampler()


def distributions(spec: Spec) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for key, values in spec.space.items():
        if isinstance(values, Range):
            kind = IntDistribution if values.integer else FloatDistribution
            out[key] = kind(values.low, values.high, log=values.log)
        else:
            out[key] = CategoricalDistribution(values)
    return out


def retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """A trial whose worker stopped (no heartbeat): its params again, as a new waiting trial."""
    RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)(study, trial)
    print(f"trial {trial.number}: its worker stopped ({GRACE_S} s without a heartbeat): failed; its params retried")


def retried_from(trial: FrozenTrial) -> list[int]:
    """The numbers of the earlier attempts at this trial's params (killed or failed), oldest first."""
    return list(trial.system_attrs.get("retry_history", []))


@contextlib.contextmanager
def ask_lock(spec: Spec, url: str, root: Path) -> Iterator[None]:
    """One worker at a time between counting the trials and asking for one: PostgreSQL's advisory lock for a
    shared database (released if the worker dies: its connection closes), a file lock for the local store."""
    import sqlalchemy  # noqa: PLC0415 - with optuna, already loaded

    if url.startswith("sqlite"):  # beside the database file, wherever the workers' projects are
        database = Path(sqlalchemy.engine.make_url(url).database or local_directory(root) / "optuna.db")
        with FileLock(str(database.with_name(f"{database.name}.{spec.name}.lock"))):
            yield
        return

    key = zlib.crc32(f"pipeline.sweeps:{spec.name}".encode())
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    finally:
        engine.dispose()


def next_trial(study: optuna.Study, spec: Spec) -> optuna.Trial | str:
    """A trial to run (a retried one first), or DONE when ``trials`` have finished, or WAIT while the running
    ones may still finish the study. The caller holds :func:`ask_lock`."""
    fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    finished = sum(trial.state == TrialState.COMPLETE for trial in trials)
    if finished >= spec.trials:
        return DONE
    given_up = [trial for trial in trials if trial.state == TrialState.FAIL and len(retried_from(trial)) >= MAX_RETRIES]
    if given_up:
        trial = given_up[0]
        raise SpecError(
            f"sweep {spec.name}: trial {trial.number} ({_params(trial.params)}) failed {MAX_RETRIES + 1} times: "
            f"{trial.user_attrs.get('error', 'see its log')}"
        )
    waiting = any(trial.state == TrialState.WAITING for trial in trials)
    running = sum(trial.state == TrialState.RUNNING for trial in trials)
    if not waiting and finished + running >= spec.trials:
        return WAIT
    trial = study.ask(distributions(spec))
    study._storage.record_heartbeat(trial._trial_id)  # stale from now on if this worker dies
    return trial


def _params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in params.items())


@contextlib.contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """The trial's heartbeat every HEARTBEAT_S seconds while the block runs (Optuna's ``optimize`` does this
    itself; a worker that asks and tells must)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a missed beat is retried at the next; GRACE_S allows four
                study._storage.record_heartbeat(trial._trial_id)

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def counts(study: optuna.Study) -> dict[str, int]:
    states: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    return states
