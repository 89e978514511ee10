"""drift-monitor: the prediction log since the last check vs the champion's reference window;
an Evidently report as an artifact, and `clip-har.drift.detected` when drift is found."""

from __future__ import annotations

from prefect import flow

from clip_har.state import StateDir
from tasks.inference import champion_model
from tasks.monitoring import check_drift, emit_drift


@flow(name="drift-monitor", log_prints=True)
def drift_monitor(model_name: str = "clip-har") -> dict:
    state = StateDir.from_env()
    version, onnx_dir = champion_model(state, model_name)
    result = check_drift(state, onnx_dir, version)
    event = emit_drift(result, version) if result.is_drift else None
    return {**result.to_dict(), "model_version": version, "event_id": event}
