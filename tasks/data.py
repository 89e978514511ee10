"""Data tasks: each wraps one clip_har stage function."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from clip_har import stages
from clip_har.config import PipelineConfig
from clip_har.data.validate import DataValidationError
from clip_har.data.versioning import DataVersion
from clip_har.state import StateDir


@task(name="prepare-data", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def prepare_data(cfg: PipelineConfig, state: StateDir) -> stages.DataRef:
    return stages.prepare_data(cfg, state)


@task(name="validate-data", cache_policy=NO_CACHE)
def validate_data(cfg: PipelineConfig, data: stages.DataRef, out: Path) -> str:
    """The Great Expectations gate; a failure fails the flow here, before any training."""
    try:
        report = stages.validate_stage(cfg, data, out)
    except DataValidationError as exc:
        create_markdown_artifact(f"```\n{exc.report.to_text()}\n```", key="data-gate", description="data gate failed")
        raise
    get_run_logger().info(report.to_text())
    return str(out)


@task(name="version-data", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def version_data(state: StateDir, data: stages.DataRef) -> DataVersion:
    version = stages.version_stage(state, data)
    get_run_logger().info("data version %s (%s)", version.tag, version.md5)
    return version


@task(name="ingest-labelled", cache_policy=NO_CACHE)
def ingest_labelled(cfg: PipelineConfig, state: StateDir, folder: str) -> tuple[stages.DataRef, int]:
    """Merge labelled images into the dataset behind the data gate (fails the flow on bad data)."""
    import time

    report = state.root / "reports" / f"ingest-gate-{int(time.time())}.json"
    try:
        data, added = stages.ingest_stage(cfg, state, Path(folder), report)
    except DataValidationError as exc:
        create_markdown_artifact(f"```\n{exc.report.to_text()}\n```", key="ingest-gate", description="ingest rejected")
        raise
    get_run_logger().info("%d labelled images added to %s", added, data.name)
    return data, added


@task(name="emit-data-arrived", cache_policy=NO_CACHE)
def emit_data_arrived(version: DataVersion, added: int) -> str:
    from prefect.events import emit_event

    event = emit_event(
        event="clip-har.data.arrived",
        resource={"prefect.resource.id": f"clip-har.data.{version.name}"},
        payload={"data_version": version.tag, "md5": version.md5, "added": added},
    )
    return str(event.id) if event else ""
