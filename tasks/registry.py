"""Gate and registry tasks."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from clip_har.config import PipelineConfig
from clip_har.data.versioning import DataVersion
from clip_har.gate import GateDecision
from clip_har.pipeline import gate as gate_stage
from clip_har.pipeline import register as register_stage
from clip_har.pipeline.evaluate import EvalSummary
from clip_har.pipeline.export import ExportSummary
from clip_har.pipeline.prepare_data import DataRef
from clip_har.pipeline.rundir import RunDir
from clip_har.registry import Registration
from clip_har.settings import MODEL_RESOURCE, PROMOTED_EVENT, StateDir
from clip_har.train.trainer import TrainResult


@task(name="gate", cache_policy=NO_CACHE)
def gate(
    cfg: PipelineConfig, state: StateDir, model_name: str, ev: EvalSummary, exported: ExportSummary | None = None
) -> GateDecision:
    decision = gate_stage.run(cfg, state, model_name, ev, exported)
    create_markdown_artifact(decision.to_markdown(), key="gate-decision", description="promotion gate")
    get_run_logger().info("gate: %s %s", "promote" if decision.promote else "reject", decision.reasons)
    return decision


@task(name="register", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def register(
    cfg: PipelineConfig,
    state: StateDir,
    model_name: str,
    trained: TrainResult,
    decision: GateDecision,
    version: DataVersion,
    gx_result: str,
    run_dir: RunDir,
    ev: EvalSummary,
    data: DataRef,
    exported: ExportSummary | None = None,
) -> tuple[Registration, GateDecision]:
    """The registration and the decision it followed (re-gated if the champion moved meanwhile)."""
    reg, final = register_stage.run(
        cfg, state, model_name, trained, decision, version, gx_result, run_dir, ev, data, exported
    )
    if final is not decision:
        create_markdown_artifact(final.to_markdown(), key="gate-decision", description="promotion gate, re-run")
        get_run_logger().info("the champion moved during this run; gated again: %s", final.reasons or "promote")
    return reg, final


@task(name="announce-promotion", cache_policy=NO_CACHE)
def announce_promotion(reg: Registration, trained: TrainResult, bento_model: str) -> str:
    """`clip-har.model.promoted`, emitted once the model is packaged: the service-reload
    deployment reacts by switching the running service to `bento_model`."""
    event = emit_event(
        event=PROMOTED_EVENT,
        resource={"prefect.resource.id": f"{MODEL_RESOURCE}.{reg.version}"},
        payload={
            "model_name": reg.model_name,
            "version": reg.version,
            "run_id": trained.run_id,
            "bento_model": bento_model,
        },
    )
    return str(event.id) if event else ""
