"""drift-monitor: the prediction log since the last check vs the champion's reference window;
an Evidently report as an artifact, and `clip-har.drift.detected` when drift is found."""

from __future__ import annotations

from prefect import flow

from clip_har.settings import load_settings
from tasks.inference import champion_model
from tasks.monitoring import check_drift, emit_drift


@flow(name="drift-monitor", log_prints=True)
def drift_monitor(model_name: str = "") -> dict:
    """`model_name`: the registered model (default: the `model_name` setting)."""
    settings = load_settings()
    version, onnx_dir = champion_model(settings.state, model_name or settings.model_name)
    result = check_drift(settings.state, onnx_dir, version)
    event = emit_drift(result, version) if result.is_drift else None
    return {**result.to_dict(), "model_version": version, "event_id": event}
