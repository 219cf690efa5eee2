"""One sweep worker (``make sweep SPEC=…``): joins the study and, until it has ``trials`` finished trials, runs the
trial it is given as a DVC experiment in a temporary workspace, reads the metric from the trial's MLflow run,
pushes the experiment where a remote is configured, and reports the metric to the study."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from pipeline.errors import PipelineError
from pipeline.sweeps import study as studies
from pipeline.sweeps.spec import Spec
from pipeline.tracking.tags import SWEEP_ENV, SWEEP_TAG, SWEEP_TRIAL_ENV, SWEEP_TRIAL_TAG

# The trial's first process: it dies with the worker (PR_SET_PDEATHSIG, also on kill -9) and then kills its own
# process group, so that dvc and the stage it runs end too: no orphan finishes a trial the study has retried.
WATCHDOG = r"""
import ctypes, os, signal, subprocess, sys
def end(*_):
    os.killpg(0, signal.SIGKILL)
signal.signal(signal.SIGTERM, end)
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    end()
sys.exit(subprocess.call(sys.argv[2:]))
"""


class TrialFailed(PipelineError):
    """A trial's experiment or its MLflow run did not give the metric."""


def yaml_value(value: Any) -> str:
    """A ``-S key=value`` value that DVC (YAML 1.2) and the stages (PyYAML, YAML 1.1) read as the same type:
    floats with a dot and a signed exponent (``1.0e-03``), as params.yaml's check asks."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, float):
        text = repr(value)
        if "e" in text:
            mantissa, exponent = text.split("e")
            mantissa += "" if "." in mantissa else ".0"
            text = f"{mantissa}e{exponent if exponent[0] in '+-' else '+' + exponent}"
        return text
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def experiment_name(spec: Spec, number: int) -> str:
    return f"{spec.name}-{number}"


def run(spec: Spec, spec_path: Path, root: Path, environ: Mapping[str, str] = os.environ) -> optuna.Study:
    """Work on the study until it is done; return it."""
    url = studies.storage_url(root, environ)
    print(f"sweep {spec.name}: study in {studies.describe_storage(url)}; worker {socket.gethostname()}:{os.getpid()}")
    study = studies.open_study(spec, url, spec_path)
    signal.signal(signal.SIGTERM, _exit_on_term)  # a batch system's cancel: the trial is failed and retried at once
    waiting = False  # said so once per wait
    while True:
        with studies.ask_lock(spec, url, root):
            trial = studies.next_trial(study, spec)
        if trial == studies.DONE:
            break
        if trial == studies.WAIT:
            if not waiting:
                waiting = True
                print(f"sweep {spec.name}: waiting for the running trials of other workers ({studies.counts(study)})")
            time.sleep(studies.HEARTBEAT_S)
            continue
        waiting = False
        _work_on(study, spec, trial, root, environ)
    print(f"sweep {spec.name}: done, {studies.counts(study).get('COMPLETE', 0)} trials finished")
    return study


def _exit_on_term(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _work_on(study: optuna.Study, spec: Spec, trial: optuna.Trial, root: Path, environ: Mapping[str, str]) -> None:
    name = experiment_name(spec, trial.number)
    params = {key: trial.params[key] for key in spec.space}
    earlier = studies.retried_from(study._storage.get_trial(trial._trial_id))
    shown = ", ".join(f"{key}={value!r}" for key, value in params.items())
    print(f"trial {trial.number} ({shown}): {'retry of ' + str(earlier) + ', ' if earlier else ''}running {name}")
    began = time.monotonic()
    try:
        with studies.heartbeat(study, trial):
            if earlier and (finished := _finished_run(spec, earlier, environ)) is not None:
                run_id, value, experiment = finished  # the earlier attempt finished before its worker stopped
                trial.set_user_attr("reused_from_trial", earlier[-1])
            else:
                _close_earlier_runs(spec, earlier, environ)
                experiment = name
                _run_experiment(spec, trial.number, spec.overrides(params), root, environ)
                run_id, value = _metric(spec, trial.number, environ)
            trial.set_user_attr("dvc_experiment", experiment)
            trial.set_user_attr("mlflow_run", run_id)
            trial.set_user_attr("pushed", _push(root, experiment, environ))
    except TrialFailed as error:
        trial.set_user_attr("error", str(error))
        study.tell(trial, state=TrialState.FAIL)
        RetryHeartbeatStaleTrialCallback(max_retry=studies.MAX_RETRIES)(
            study, study._storage.get_trial(trial._trial_id)
        )
        print(f"trial {trial.number}: failed: {error}")
        return
    except BaseException:
        # Ctrl-C or a batch system's SIGTERM: the trial's processes are gone (see _run_experiment); its params go
        # back to the study at once instead of after the heartbeat's grace period.
        study.tell(trial, state=TrialState.FAIL)
        RetryHeartbeatStaleTrialCallback(max_retry=None)(study, study._storage.get_trial(trial._trial_id))
        print(f"trial {trial.number}: interrupted; its params are back in the study", file=sys.stderr)
        raise
    study.tell(trial, value)
    print(f"trial {trial.number}: {spec.metric} = {value:.6g} in {time.monotonic() - began:.0f} s ({experiment})")


def _run_experiment(spec: Spec, number: int, settings: Mapping[str, Any], root: Path, environ: Mapping[str, str]):
    name = experiment_name(spec, number)
    command = ["dvc", "exp", "run", "--temp", "--name", name]
    command += [f"--set-param={key}={yaml_value(value)}" for key, value in settings.items()]
    log = studies.local_directory(root) / "logs" / f"{name}.log"
    log.parent.mkdir(exist_ok=True)
    env = {**environ, SWEEP_ENV: spec.name, SWEEP_TRIAL_ENV: str(number)}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", WATCHDOG, str(os.getpid()), *command],
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, which the watchdog (or we) can end whole
        )
        try:
            code = process.wait()
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise TrialFailed(f"dvc exp run exited with {code}: {tail[0]} (log: {log})")


def _client(environ: Mapping[str, str]):
    from mlflow.tracking import MlflowClient  # noqa: PLC0415 - MLflow loads only once a trial has run

    from pipeline.tracking.store import tracking_uri  # noqa: PLC0415 - imports mlflow

    return MlflowClient(tracking_uri(environ))


def _trial_runs(client, spec: Spec, numbers: list[int], status: str) -> list:
    experiment = client.get_experiment_by_name(spec.model)
    if experiment is None:
        return []
    return [  # MLflow's search has no OR, and IN only for run ids
        run
        for number in numbers
        for run in client.search_runs(
            [experiment.experiment_id],
            filter_string=(
                f"tags.`{SWEEP_TAG}` = '{spec.name}' and tags.`{SWEEP_TRIAL_TAG}` = '{number}' "
                f"and attributes.status = '{status}'"
            ),
        )
    ]


def _metric(spec: Spec, number: int, environ: Mapping[str, str]) -> tuple[str, float]:
    runs = _trial_runs(_client(environ), spec, [number], "FINISHED")
    if not runs:
        raise TrialFailed(
            f"no FINISHED MLflow run of trial {number} in experiment {spec.model!r}: DVC may have restored "
            f"train_{spec.model} from its run cache (these params were trained before), so nothing was trained"
        )
    run = runs[0]
    if spec.metric not in run.data.metrics:
        raise TrialFailed(f"MLflow run {run.info.run_id} has no metric {spec.metric!r}: {sorted(run.data.metrics)}")
    return run.info.run_id, run.data.metrics[spec.metric]


def _finished_run(spec: Spec, numbers: list[int], environ: Mapping[str, str]) -> tuple[str, float, str] | None:
    """An earlier attempt that finished its run and metric (its worker died before telling the study)."""
    for run in _trial_runs(_client(environ), spec, numbers, "FINISHED"):
        if spec.metric in run.data.metrics:
            return run.info.run_id, run.data.metrics[spec.metric], run.info.run_name
    return None


def _close_earlier_runs(spec: Spec, numbers: list[int], environ: Mapping[str, str]) -> None:
    """The runs the killed attempts left RUNNING, on whichever machine they ran: ended KILLED."""
    if not numbers:
        return
    client = _client(environ)
    for run in _trial_runs(client, spec, numbers, "RUNNING"):
        client.set_terminated(run.info.run_id, "KILLED")
        print(f"MLflow run {run.info.run_id} of trial {run.data.tags[SWEEP_TRIAL_TAG]} was left RUNNING: marked KILLED")


def _push(root: Path, name: str, environ: Mapping[str, str]) -> str:
    """``dvc exp push`` to the git remote (``origin``, else the only one) and the DVC remote (the default one, else
    ``team`` when the team's S3 is configured); the remote pushed to, or why not."""

    def lines(*command: str) -> list[str]:
        result = subprocess.run(command, cwd=root, env=dict(environ), capture_output=True, text=True)
        return result.stdout.split() if result.returncode == 0 else []

    remotes = lines("git", "remote")
    if not remotes:
        return "no git remote"
    git_remote = "origin" if "origin" in remotes else remotes[0]
    dvc_remote = (lines("dvc", "remote", "default") or [None])[0]
    if dvc_remote is None and environ.get("AWS_ENDPOINT_URL_S3") and "team" in lines("dvc", "remote", "list"):
        dvc_remote = "team"
    command = ["dvc", "exp", "push", *(["--remote", dvc_remote] if dvc_remote else ["--no-cache"]), git_remote, name]
    result = subprocess.run(command, cwd=root, env=dict(environ), capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        print(f"experiment {name}: not pushed ({' '.join(command)}: {message}); push it later the same way")
        return "failed"
    return f"{git_remote}" + (f", {dvc_remote}" if dvc_remote else "")
