"""The team stack's MLflow UI in headless Chromium, over TLS: signed in, a person sees the experiments and a
run as the server holds it; an anonymous browser gets no page. The stack and its trained project: the session's
(tests/conftest.py)."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil

import browser
import pytest
from browser import PageNotShown, as_the_ui_shows, page_text, value_beside
from team_fixtures import on_team_server

from pipeline.team.stack import Stack

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("team")]


def on_server(stack: Stack):
    return on_team_server(stack)


def pinned_in_the_browser(stack: Stack) -> str:
    """Chromium's flag that trusts the stack's server key (it takes no CA file): the key's SPKI sha256."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    certificate = x509.load_pem_x509_certificate(stack.path("server.pem").read_bytes())
    key = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"--ignore-certificate-errors-spki-list={base64.b64encode(hashlib.sha256(key).digest()).decode()}"


def test_the_server_ui_shows_the_experiments_after_a_login(team_stack, team_project, tmp_path, monkeypatch):
    """Signed in as the trainer, the UI lists the pipeline's experiments and shows a run as the server holds it;
    an anonymous browser gets no page."""
    stack = team_stack
    monkeypatch.setattr(browser, "CHROMIUM_FLAGS", (*browser.CHROMIUM_FLAGS, pinned_in_the_browser(stack)))
    login = ("trainer", stack.secrets["trainer_password"])
    # The UI's scripts come over TLS from a server on a busy 2-core machine: more time than the default minute.
    experiments = page_text(
        f"{stack.mlflow_url}/#/experiments", tmp_path / "experiments.png", "mnist", login, timeout=120
    )
    assert "fable" in experiments.splitlines(), experiments[-2000:]
    assert "trainer" in experiments.splitlines()  # who is signed in
    client = on_server(stack)
    run = next(run for run in team_project.runs("fable", store=stack.mlflow_url) if "test_accuracy" in run.data.metrics)
    stored = client.get_run(run.info.run_id)  # what the server holds, not what the page may say
    page = page_text(
        f"{stack.mlflow_url}/#/experiments/{stored.info.experiment_id}/runs/{stored.info.run_id}",
        tmp_path / "run.png",
        "test_accuracy",
        login,
    )
    assert stored.info.run_name in page, page[-2000:]
    assert value_beside(page, "test_accuracy") == as_the_ui_shows(stored.data.metrics["test_accuracy"]), page[-3000:]
    assert value_beside(page, "Created by") == stored.info.user_id == "trainer"
    assert (tmp_path / "experiments.png").stat().st_size > 10_000
    with pytest.raises(PageNotShown, match="ERR_INVALID_AUTH_CREDENTIALS"):  # the server asked for a login
        page_text(f"{stack.mlflow_url}/#/experiments", tmp_path / "anonymous.png", "mnist")
    keep = os.environ.get("PIPELINE_UI_SCREENSHOT")
    if keep:
        shutil.copy(tmp_path / "experiments.png", keep)
