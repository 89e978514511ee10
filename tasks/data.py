"""Data tasks: each wraps one clip_har pipeline stage."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from clip_har.config import PipelineConfig
from clip_har.data.validate import DataValidationError
from clip_har.data.versioning import DataVersion
from clip_har.pipeline import ingest_labelled as ingest_stage
from clip_har.pipeline import prepare_data as prepare_stage
from clip_har.pipeline import validate_data as validate_stage
from clip_har.pipeline import version_data as version_stage
from clip_har.pipeline.prepare_data import DataRef
from clip_har.settings import DATA_EVENT, DATA_RESOURCE, StateDir


@task(name="prepare-data", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def prepare_data(cfg: PipelineConfig, state: StateDir) -> DataRef:
    return prepare_stage.run(cfg, state)


@task(name="validate-data", cache_policy=NO_CACHE)
def validate_data(cfg: PipelineConfig, data: DataRef, out: Path) -> str:
    """The Great Expectations gate; a failure fails the flow here, before any training."""
    try:
        report = validate_stage.run(cfg, data, out)
    except DataValidationError as exc:
        create_markdown_artifact(f"```\n{exc.report.to_text()}\n```", key="data-gate", description="data gate failed")
        raise
    get_run_logger().info(report.to_text())
    return str(out)


@task(name="version-data", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def version_data(state: StateDir, data: DataRef) -> DataVersion:
    version = version_stage.run(state, data)
    get_run_logger().info("data version %s (%s)", version.tag, version.md5)
    return version


@task(name="ingest-labelled", cache_policy=NO_CACHE)
def ingest_labelled(cfg: PipelineConfig, state: StateDir, folder: str) -> tuple[DataRef, int]:
    """Merge labelled images into the dataset behind the data gate (fails the flow on bad data)."""
    report = state.reports / f"ingest-gate-{int(time.time())}.json"
    try:
        data, added = ingest_stage.run(cfg, state, Path(folder), report)
    except DataValidationError as exc:
        create_markdown_artifact(f"```\n{exc.report.to_text()}\n```", key="ingest-gate", description="ingest rejected")
        raise
    get_run_logger().info("%d labelled images added to %s", added, data.name)
    return data, added


@task(name="emit-data-arrived", cache_policy=NO_CACHE)
def emit_data_arrived(version: DataVersion, added: int) -> str:
    event = emit_event(
        event=DATA_EVENT,
        resource={"prefect.resource.id": f"{DATA_RESOURCE}.{version.name}"},
        payload={"data_version": version.tag, "md5": version.md5, "added": added},
    )
    return str(event.id) if event else ""
