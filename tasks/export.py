"""Export and packaging tasks."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from clip_har import stages
from clip_har.config import PipelineConfig
from clip_har.registry import Registration
from clip_har.state import StateDir
from clip_har.train.trainer import TrainResult


@task(name="export", cache_policy=NO_CACHE)
def export_model(cfg: PipelineConfig, trained: TrainResult, data: stages.DataRef) -> stages.ExportSummary:
    summary = stages.export_stage(cfg, trained, data)
    get_run_logger().info("ONNX %s…, serving backend %s", summary.image_sha256[:12], summary.serve_backend)
    return summary


@task(name="package", cache_policy=NO_CACHE)
def package(export: stages.ExportSummary, reg: Registration, lineage_file: str) -> dict[str, str]:
    """BentoML model store + Bento build (BentoML lives outside the library, in deployments/)."""
    import json
    from pathlib import Path

    from deployments.bento_pack import package as bento_package

    lineage = {**json.loads(Path(lineage_file).read_text()), "registry_version": reg.version}
    onnx_dir = Path(export.onnx_dir)
    return bento_package(onnx_dir, lineage, model_dir=onnx_dir.parent / "model")


@task(name="record-lineage", cache_policy=NO_CACHE)
def record_lineage(state: StateDir, trained: TrainResult, reg: Registration, tags: dict[str, str]) -> dict[str, str]:
    return stages.record_package(state, trained, reg, tags)
