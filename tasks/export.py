"""Export and packaging tasks."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from clip_har.config import PipelineConfig
from clip_har.pipeline import export as export_stage
from clip_har.pipeline import record_lineage as lineage_stage
from clip_har.pipeline.export import ExportSummary
from clip_har.pipeline.prepare_data import DataRef
from clip_har.pipeline.rundir import RunDir
from clip_har.registry import Registration
from clip_har.settings import StateDir
from clip_har.train.trainer import TrainResult


@task(name="export", cache_policy=NO_CACHE)
def export(cfg: PipelineConfig, data: DataRef, run_dir: RunDir) -> ExportSummary:
    summary = export_stage.run(cfg, data, run_dir)
    get_run_logger().info("ONNX %s…, serving backend %s", summary.image_sha256[:12], summary.serve_backend)
    return summary


@task(name="package", cache_policy=NO_CACHE)
def package(exported: ExportSummary, reg: Registration, run_dir: RunDir) -> dict[str, str]:
    """BentoML model store + Bento build (BentoML lives outside the library, in deployments/)."""
    import json

    from deployments.bento_pack import package as bento_package

    lineage = {**json.loads(run_dir.lineage.read_text()), "registry_version": reg.version}
    return bento_package(
        Path(exported.onnx_dir), lineage, reg.model_name, model_dir=run_dir.model, eval_report=run_dir.eval_report
    )


@task(name="record-lineage", cache_policy=NO_CACHE)
def record_lineage(
    state: StateDir, trained: TrainResult, reg: Registration, run_dir: RunDir, tags: dict[str, str]
) -> dict[str, str]:
    return lineage_stage.run(state, trained, reg, run_dir, tags)
