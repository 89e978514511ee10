"""Drift-monitor tasks."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from clip_har.monitoring.drift import DriftResult
from clip_har.monitoring.monitor import run_check
from clip_har.settings import DRIFT_EVENT, MODEL_RESOURCE, StateDir


@task(name="check-drift", cache_policy=NO_CACHE)
def check_drift(state: StateDir, onnx_dir: str, model_version: str) -> DriftResult:
    result, window = run_check(state.predictions, Path(onnx_dir), state.reports)
    logger = get_run_logger()
    for part in window.skipped_parts:
        logger.warning("skipped prediction-log part %s", part)
    create_markdown_artifact(
        result.to_markdown() + f"\n\nchampion v{model_version}; window {window.since:.0f}–{window.until:.0f}",
        key="drift-check",
        description="prediction log vs the champion's reference window",
    )
    return result


@task(name="emit-drift-event", cache_policy=NO_CACHE)
def emit_drift(result: DriftResult, model_version: str) -> str:
    """The event automations react to (retraining); it carries the scores as the reason."""
    event = emit_event(
        event=DRIFT_EVENT,
        resource={"prefect.resource.id": f"{MODEL_RESOURCE}.{model_version}"},
        payload={"scores": result.scores, "drifted": result.drifted, "n_current": result.n_current},
    )
    return str(event.id) if event else ""
