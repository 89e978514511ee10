"""Gate and registry tasks."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from clip_har import stages
from clip_har.config import PipelineConfig
from clip_har.data.versioning import DataVersion
from clip_har.gate import GateDecision
from clip_har.registry import Registration
from clip_har.state import StateDir
from clip_har.train.trainer import TrainResult


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
    reg = stages.register_stage(cfg, state, trained, decision, version, gx_result, exported)
    if reg.promoted:  # what the serving side listens for to switch to the new champion
        from prefect.events import emit_event

        emit_event(
            event="clip-har.model.promoted",
            resource={"prefect.resource.id": f"clip-har.model.{reg.version}"},
            payload={"model_name": reg.model_name, "version": reg.version, "run_id": trained.run_id},
        )
    return reg
