"""Gate and registry tasks."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from clip_har import stages
from clip_har.config import PipelineConfig
from clip_har.data.versioning import DataVersion
from clip_har.gate import GateDecision
from clip_har.registry import Registration
from clip_har.state import StateDir
from clip_har.train.trainer import TrainResult

PROMOTED_EVENT = "clip-har.model.promoted"


@task(name="gate", cache_policy=NO_CACHE)
def gate(
    cfg: PipelineConfig, state: StateDir, ev: stages.EvalSummary, exported: stages.ExportSummary | None = None
) -> GateDecision:
    decision = stages.gate_stage(cfg, state, ev, exported)
    create_markdown_artifact(decision.to_markdown(), key="gate-decision", description="promotion gate")
    get_run_logger().info("gate: %s %s", "promote" if decision.promote else "reject", decision.reasons)
    return decision


@task(name="register", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def register(
    cfg: PipelineConfig,
    state: StateDir,
    trained: TrainResult,
    decision: GateDecision,
    version: DataVersion,
    gx_result: str,
    exported: stages.ExportSummary | None = None,
) -> Registration:
    return stages.register_stage(cfg, state, trained, decision, version, gx_result, exported)


@task(name="announce-promotion", cache_policy=NO_CACHE)
def announce_promotion(reg: Registration, trained: TrainResult, bento_model: str) -> str:
    """`clip-har.model.promoted`, emitted once the model is packaged: the service-reload
    deployment reacts by switching the running service to `bento_model`."""
    event = emit_event(
        event=PROMOTED_EVENT,
        resource={"prefect.resource.id": f"clip-har.model.{reg.version}"},
        payload={
            "model_name": reg.model_name,
            "version": reg.version,
            "run_id": trained.run_id,
            "bento_model": bento_model,
        },
    )
    return str(event.id) if event else ""
