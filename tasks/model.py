"""Model tasks: base weights, training, evaluation."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from clip_har.config import PipelineConfig
from clip_har.data.versioning import DataVersion
from clip_har.pipeline import base_weights as base_stage
from clip_har.pipeline import evaluate as evaluate_stage
from clip_har.pipeline import train as train_stage
from clip_har.pipeline.evaluate import EvalSummary
from clip_har.pipeline.prepare_data import DataRef
from clip_har.pipeline.rundir import RunDir
from clip_har.pipeline.summary import links_markdown
from clip_har.settings import StateDir, load_settings
from clip_har.tracking import client
from clip_har.train.trainer import TrainResult


@task(name="base-weights", cache_policy=NO_CACHE)
def base_weights(cfg: PipelineConfig, state: StateDir) -> str | None:
    return base_stage.run(cfg, state)


@task(name="train", cache_policy=NO_CACHE)
def train(
    cfg: PipelineConfig, state: StateDir, data: DataRef, version: DataVersion, base: str | None, run_dir: RunDir
) -> TrainResult:
    return train_stage.run(cfg, state, data, version, base, run_dir)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(
    cfg: PipelineConfig,
    state: StateDir,
    model_name: str,
    trained: TrainResult,
    data: DataRef,
    base: str | None,
    run_dir: RunDir,
) -> EvalSummary:
    summary = evaluate_stage.run(cfg, state, model_name, trained, data, base, run_dir)
    create_markdown_artifact(summary.markdown, key="evaluation", description="held-out evaluation vs zero-shot")
    return summary


@task(name="publish-links", cache_policy=NO_CACHE)
def publish_links(state: StateDir, trained: TrainResult) -> str:
    """Links on the flow run's page: the MLflow run, its confusion matrix and the latest drift
    check with its Evidently report; returns the run's MLflow address."""
    from clip_har.monitoring.monitor import last_verdict

    settings = load_settings()
    ui = settings.tracking_server or settings.mlflow_url  # the server, or `make up`'s UI on the SQLite file
    experiment = client(state.mlflow_uri).get_run(trained.run_id).info.experiment_id
    url = f"{ui}/#/experiments/{experiment}/runs/{trained.run_id}"
    create_link_artifact(url, link_text=f"MLflow run {trained.run_id}", key="mlflow-run", description="training run")
    markdown = links_markdown(ui, experiment, trained.run_id, last_verdict(state.reports))
    create_markdown_artifact(markdown, key="where-to-look", description="MLflow run, confusion matrix, drift report")
    return url
