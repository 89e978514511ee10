"""register: model, gate decision and lineage logged to the run, then a registry version; the
`champion` alias moves only if the gate passed against the champion that is still champion.
Two pipelines at once take turns here (the model-registry lock); one that finds the champion
moved since its gate is gated again against the new one. With `rollout.shadow_requests` > 0 and
a champion to shadow, a passed model becomes the `challenger` instead (clip_har.rollout); either
way, a challenger still in shadow is replaced (its rollout ends, aborted, with the reason)."""

from __future__ import annotations

import json

from clip_har.config import PipelineConfig
from clip_har.data.versioning import DataVersion
from clip_har.gate import GateDecision
from clip_har.locks import file_lock
from clip_har.pipeline import gate
from clip_har.pipeline.evaluate import EvalSummary
from clip_har.pipeline.export import ExportSummary
from clip_har.pipeline.prepare_data import DataRef
from clip_har.pipeline.rundir import MODEL, ONNX, RunDir
from clip_har.registry import Registration, champion_version, register
from clip_har.rollout import end_replaced
from clip_har.rollout_registry import abort_challenger, challenger_version
from clip_har.settings import StateDir
from clip_har.tracking import client, git_sha
from clip_har.train.trainer import TrainResult


def run(
    cfg: PipelineConfig,
    state: StateDir,
    model_name: str,
    trained: TrainResult,
    decision: GateDecision,
    version: DataVersion,
    validation_report: str,
    run_dir: RunDir,
    ev: EvalSummary,
    data: DataRef,
    export: ExportSummary | None = None,
) -> tuple[Registration, GateDecision]:
    """(the registration, the gate decision it followed: `decision`, or the re-gated one)."""
    c = client(state.mlflow_uri)
    lineage = _lineage(cfg, trained, version, validation_report, export)
    # the uploads first, outside the lock: they do not depend on the decision
    if export is not None:
        c.log_artifacts(trained.run_id, export.onnx_dir, ONNX)
        c.log_artifact(trained.run_id, export.record)
    run_dir.lineage.write_text(json.dumps(lineage, indent=2))
    c.log_artifacts(trained.run_id, str(run_dir.model), MODEL)
    c.log_artifact(trained.run_id, str(run_dir.lineage))
    with file_lock(state.model_lock):
        if decision.promote and champion_version(c, model_name) != decision.champion_version:
            decision = gate.regate(cfg, state, model_name, ev, data, run_dir, export)
        run_dir.gate_decision.write_text(decision.to_json())
        c.log_artifact(trained.run_id, str(run_dir.gate_decision))
        c.set_tag(trained.run_id, "gate", "pass" if decision.promote else "reject")
        # the first model has no champion to shadow: it is promoted at once
        shadow = cfg.rollout.shadow_requests > 0 and decision.champion_version is not None
        replaced = challenger_version(c, model_name) if decision.promote else None
        reg = register(c, model_name, trained.run_id, decision, lineage, shadow=shadow)
        if replaced and replaced != reg.version:
            why = f"replaced by v{reg.version}, {'a newer challenger' if shadow else 'promoted'}"
            abort_challenger(c, model_name, replaced, why)
            end_replaced(state, replaced, why)
    return reg, decision


def _lineage(
    cfg: PipelineConfig,
    trained: TrainResult,
    version: DataVersion,
    validation_report: str,
    export: ExportSummary | None,
) -> dict[str, str]:
    lineage = {
        "data_version": version.tag,
        "data_md5": version.md5,
        "data_commit": version.commit,
        "data_registry": version.registry,
        "gx_result": validation_report,
        "mlflow_run_id": trained.run_id,
        "git_sha": git_sha(),
        "profile": cfg.profile,
    }
    if export is not None:
        lineage["onnx_sha256"] = export.image_sha256
        lineage["serve_backend"] = export.serve_backend
    return lineage
