"""drift-monitor: the prediction log since the last check vs the champion's reference window;
an Evidently report as an artifact, and `clip-har.drift.detected` when drift is found. A
champion promoted by a shadow rollout whose predictions drift within the rollback window is
rolled back: the previous champion again, and `clip-har.model.promoted` so the service follows."""

from __future__ import annotations

from prefect import flow

from clip_har.settings import load_settings
from tasks.inference import champion_model
from tasks.monitoring import check_drift, emit_drift
from tasks.rollout import announce_champion, roll_back_if_drifted


@flow(name="drift-monitor", log_prints=True)
def drift_monitor(model_name: str = "") -> dict:
    """`model_name`: the registered model (default: the `model_name` setting)."""
    settings = load_settings()
    name = model_name or settings.model_name
    version, onnx_dir = champion_model(settings.state, name)
    result = check_drift(settings.state, onnx_dir, version)
    event = emit_drift(result, version) if result.is_drift else None
    back = roll_back_if_drifted(settings.state, name, result, version) if result.is_drift else None
    if back is not None:
        announce_champion(back.model_name, back.champion_version, back.champion_bento, "rollback")
    rolled_back = {"to_version": back.champion_version, "reason": back.reason} if back else None
    return {**result.to_dict(), "model_version": version, "event_id": event, "rolled_back": rolled_back}
