"""Model tasks: base weights, training, evaluation."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from clip_har import stages
from clip_har.config import PipelineConfig
from clip_har.data.versioning import DataVersion
from clip_har.state import StateDir
from clip_har.train.trainer import TrainResult


@task(name="base-weights", cache_policy=NO_CACHE)
def base_weights(cfg: PipelineConfig, state: StateDir) -> str | None:
    return stages.base_weights(cfg, state)


@task(name="train", cache_policy=NO_CACHE)
def train(
    cfg: PipelineConfig, state: StateDir, data: stages.DataRef, version: DataVersion, base: str | None, run_dir: Path
) -> TrainResult:
    return stages.train_stage(cfg, state, data, version, base, run_dir)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(
    cfg: PipelineConfig, state: StateDir, trained: TrainResult, data: stages.DataRef, base: str | None
) -> stages.EvalSummary:
    summary = stages.evaluate_stage(cfg, state, trained, data, base)
    create_markdown_artifact(summary.markdown, key="evaluation", description="held-out evaluation vs zero-shot")
    return summary
