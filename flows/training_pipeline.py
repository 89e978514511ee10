"""training-pipeline: synth/ingest → validate → version → train → evaluate → export → gate →
register → package (Bento) → `clip-har.model.promoted` for promoted models, or, with
`rollout.shadow_requests` > 0, a shadow rollout and `clip-har.model.challenger` (flows/rollout.py)."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Cancelled

from clip_har.pipeline.summary import summary
from clip_har.registry import SHADOW
from clip_har.settings import load_settings
from tasks.config import resolve_config, start_run
from tasks.data import prepare_data, validate_data, version_data
from tasks.export import export, package, record_lineage
from tasks.guard import recent_training
from tasks.model import base_weights, evaluate, publish_links, train
from tasks.registry import announce_promotion, gate, register
from tasks.rollout import announce_challenger, begin_rollout


@flow(name="training-pipeline", log_prints=True)
def training_pipeline(
    profile: str = "",
    overrides: list[str] | None = None,
    reason: str = "manual",
    min_interval_s: float | None = None,
):  # a summary dict, or a Cancelled state when de-duplicated
    """Train a challenger on the profile's data and promote it only if the gate passes.

    `profile`: a profile name or YAML file; empty = the `profile` setting (CLIP_HAR_PROFILE).
    `overrides` are dotted `key=value` strings (e.g. `train.max_epochs=3`); `reason` records why
    the run started (manual, schedule, "drift alert: …", "new data: …"). Event-triggered runs
    stand down when another training run is active, or another event-triggered one started
    within `min_interval_s` (default: the CLIP_HAR_RETRAIN_COOLDOWN_S setting).
    """
    other = recent_training(reason, min_interval_s)
    if other:
        return Cancelled(message=f"de-duplicated: training run {other} is recent or running")
    settings = load_settings()
    state, name = settings.state, settings.model_name
    cfg = resolve_config(profile, overrides or [])
    run_dir = start_run(state)
    data = prepare_data(cfg, state)
    gx_result = validate_data(cfg, data, run_dir.data_gate)
    version = version_data(state, data)
    base = base_weights(cfg, state)
    trained = train(cfg, state, data, version, base, run_dir)
    ev = evaluate(cfg, state, name, trained, data, base, run_dir)
    mlflow_run = publish_links(state, trained)
    exported = export(cfg, data, run_dir) if cfg.export.enabled else None
    decision = gate(cfg, state, name, ev, exported)
    reg, decision = register(cfg, state, name, trained, decision, version, gx_result, run_dir, ev, data, exported)
    lineage = {}
    if decision.promote and exported is not None and cfg.export.package:
        tags = package(exported, reg, run_dir)
        lineage = record_lineage(state, trained, reg, run_dir, tags)
    if reg.promoted:
        announce_promotion(reg, trained, lineage.get("bento_model", ""))
    elif reg.status == SHADOW:  # the champion stays until the rollout decides
        announce_challenger(begin_rollout(cfg, state, reg))
    return {
        **summary(reg, ev, decision, version),
        "lineage": lineage,
        "reason": reason,
        "run_dir": str(run_dir.root),
        "flow_run_id": flow_run.id,
        "mlflow_run_url": mlflow_run,
    }


if __name__ == "__main__":
    training_pipeline()
