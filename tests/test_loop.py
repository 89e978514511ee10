"""The closed loop on the real stack (Prefect server + worker, MLflow, `bentoml serve`) on free
loopback ports with the tiny model: traffic → drift + labelled data → events → one training run
→ gate → promotion event → service-reload → the running service answers with the new model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The tiny model on a little more data than the `tiny` profile, so the reference window (the
# validation split) has ~90 rows. The gate is opened wide on purpose: this test is about the
# chain of events; the gate's judgement has its own tests.
PROFILE = """
data: {source: synth, name: loop, synth: {n: 600, seed: 0, size: 64}, min_per_class: 5}
model: {preset: tiny}
pretrain: {enabled: true, n: 150, epochs: 1, batch_size: 32}
train: {mode: full, max_epochs: 2, batch_size: 32, lr: 0.001}
gate: {min_improvement: -1.0, zero_shot_margin: -1.0, max_class_regression: 1.0, latency_p95_ms: 10000}
"""


def test_drift_and_new_data_retrain_promote_and_switch_the_service(
    state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free_port: Callable[[], int]
) -> None:
    from clip_har_cli import stack
    from clip_har_cli.loop import LoopSettings, run_loop

    for var in ("CLIP_HAR_PREFECT_PORT", "CLIP_HAR_MLFLOW_PORT", "CLIP_HAR_PORT"):
        monkeypatch.setenv(var, str(free_port()))
    monkeypatch.setenv("PREFECT_HOME", str(state_dir / "prefect"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    (tmp_path / "loop.yaml").write_text(PROFILE)
    monkeypatch.setenv("CLIP_HAR_PROFILE", str(tmp_path / "loop.yaml"))
    said: list[str] = []
    try:
        result = run_loop(LoopSettings(n_normal=200, n_night=200, timeout_s=900, seed=7), said.append)
    finally:
        stack.down(said.append)
    steps = result["timeline"]
    names = [s["step"] for s in steps]
    assert names[:2] == ["stack", "first champion"], said
    assert result["promoted"] and result["model_after"] != result["model_before"]
    checks = [s for s in steps if s["step"] == "drift check"]
    assert [c["detail"].split()[0] for c in checks] == ["ok", "drift"] and all(c["flow_run"] for c in checks)
    training = [s["detail"] for s in steps if s["step"] == "training"]
    assert len(training) == 2 and sum(d.startswith("Completed") for d in training) == 1, training
    assert any("new data" in d for d in training) and any("drift alert" in d for d in training)
    reload = [s for s in steps if s["step"] == "service-reload"]
    assert len(reload) == 1 and reload[0]["detail"].startswith("Completed") and reload[0]["flow_run"]
    assert result["model_after"] in reload[0]["detail"]
    assert Path(state_dir / "loop" / "timeline-7.json").is_file()
