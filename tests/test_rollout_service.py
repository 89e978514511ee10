"""The rollout flows and `clip-har rollout` against the real service (`bentoml serve` on a free
loopback port): rollout-start → live traffic → rollout-decide aborts on a failed rule; a second
challenger → `status` → `promote` → the service serves it and shadows nothing any more."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from test_rollout import NAME, _aliases, _png
from test_service import ADMIN, running_server, store  # noqa: F401 (`store`: the model-store fixture)
from typer.testing import CliRunner

from clip_har import rollout as ro
from clip_har.config import RolloutConfig
from clip_har.gate import GateDecision
from clip_har.monitoring.review import ReviewQueue
from clip_har.registry import register
from clip_har.settings import StateDir, load_settings
from clip_har.tracking import client, ensure_experiment
from clip_har_cli.main import app

pytestmark = pytest.mark.integration


@pytest.fixture
def cli_state(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> StateDir:
    """The state dir; the CLI exports its environment (MLflow URIs, homes), restored after the test."""
    state = load_settings().state
    for key, value in state.env().items():
        monkeypatch.setenv(key, os.environ.get(key, value))
    return state


def _traffic(url: str, image: Path, n: int) -> dict:
    """`n` predictions, then the shadow figures once all `n` are scored (they may land just after
    the answers)."""
    from clip_har.serving.client import predict_files

    with httpx.Client(timeout=60) as http:
        for _ in range(n):
            predict_files(http, url, [image])
    deadline = time.time() + 30
    while (stats := httpx.get(f"{url}/shadow", timeout=10).json())["requests"] < n and time.time() < deadline:
        time.sleep(0.2)
    return stats


def test_rollouts_against_the_real_service(
    prefect_harness, cli_state: StateDir, tmp_path: Path, free_port, monkeypatch: pytest.MonkeyPatch, request
) -> None:
    from clip_har.export.onnx_export import export_untrained
    from clip_har.serving.predictor import Predictor
    from flows.rollout import rollout_decide, rollout_start

    models = request.getfixturevalue("store")  # the service tests' store: built only when this test runs
    c = client(cli_state.mlflow_uri)
    exp = ensure_experiment(c, "clip-har", cli_state.mlflow_artifacts)
    onnx = {seed: export_untrained(tmp_path / f"onnx{seed}", seed) for seed in (0, 1)}  # the store's first two

    def add(seed: int, gated_against: str | None, shadow: bool) -> str:
        run = c.create_run(exp).info.run_id
        c.log_artifacts(run, str(onnx[seed]), "onnx")  # what the decision scores review images with
        decision = GateDecision(True, [], 0.9, None, 0.5, champion_version=gated_against)
        return register(c, NAME, run, decision, {"bento_model": models.tags[seed]}, shadow=shadow).version

    # one labelled review image, on which the challenger is wrong
    image = tmp_path / "a.png"
    image.write_bytes(_png(7))
    challenger = Predictor(onnx[1])
    said = challenger.predict(challenger.decode(image.read_bytes())[None], top_k=1)[0].label
    queue, classes = ReviewQueue(cli_state.review), challenger.classes
    item = queue.offer(image.read_bytes(), np.full(len(classes), 1 / len(classes)), classes, "1", ".png")
    queue.label(item, next(k for k in classes if k != said), classes)

    rules = RolloutConfig(shadow_requests=3, min_agreement=0.0, max_error_rate=1.0, min_reviewed=1)
    assert add(0, None, False) == "1" and add(1, "1", True) == "2"
    ro.begin(cli_state, NAME, "2", "1", rules.model_copy(update={"min_reviewed_accuracy": 1.0}))
    with running_server(models, tmp_path / "serve", free_port()) as srv:
        monkeypatch.setenv("CLIP_HAR_SERVICE_URL", srv.url)
        monkeypatch.setenv("CLIP_HAR_ADMIN_TOKEN", ADMIN["X-Admin-Token"])
        assert rollout_start(bento_model=models.tags[1])["challenger"] == models.tags[1]
        assert rollout_decide()["action"] == "wait"
        assert _traffic(srv.url, image, 3)["challenger"] == models.tags[1]
        aborted = rollout_decide()
        assert aborted["action"] == "abort" and aborted["acted"], aborted
        assert "reviewed accuracy 0.000 on 1 images (min 1.0)" in aborted["reasons"]
        assert httpx.get(f"{srv.url}/shadow").json()["challenger"] is None and _aliases(cli_state) == ("1", None)
        # a second challenger, whose rules hold (one review image is too few to judge it by)
        assert add(1, "1", True) == "3"
        ro.begin(cli_state, NAME, "3", "1", rules.model_copy(update={"min_reviewed": 2}))
        assert rollout_start()["challenger"] == models.tags[1]
        _traffic(srv.url, image, 3)
        r = CliRunner().invoke(app, ["rollout", "status"])
        assert r.exit_code == 0 and f"shadows {models.tags[1]}" in r.output, r.output
        r = CliRunner().invoke(app, ["rollout", "promote"])
        assert r.exit_code == 0 and "promoted: v3 is champion (was v1)" in r.output, r.output
        assert _aliases(cli_state) == ("3", None)
        shadow = httpx.get(f"{srv.url}/shadow").json()
        assert (shadow["champion"], shadow["challenger"]) == (models.tags[1], None)  # switched, shadow over
