"""train: fit the classifier on the versioned data, logged to MLflow."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from clip_har.config import PipelineConfig
from clip_har.data.versioning import DataVersion
from clip_har.pipeline.prepare_data import DataRef
from clip_har.pipeline.rundir import RunDir
from clip_har.settings import StateDir, child_env
from clip_har.tracking import client, ensure_experiment
from clip_har.train import launch
from clip_har.train.trainer import TrainResult, train


def run(
    cfg: PipelineConfig, state: StateDir, data: DataRef, version: DataVersion, base: str | None, run_dir: RunDir
) -> TrainResult:
    """In-process for one device; in a child process for DDP/FSDP (its ranks re-execute it)."""
    ensure_experiment(client(state.mlflow_uri), cfg.registry.experiment, state.mlflow_artifacts)
    base_weights = Path(base) if base else None
    if cfg.train.strategy == "auto" and cfg.train.devices == 1:
        result = train(
            cfg,
            Path(data.root),
            run_dir.root,
            tracking_uri=state.mlflow_uri,
            base_weights=base_weights,
            data_version=version.tag,
        )
        assert result is not None  # single process is rank 0
        return result
    args = launch.argv(
        cfg.profile,
        launch.config_overrides(cfg),
        Path(data.root),
        run_dir.root,
        state.mlflow_uri,
        base_weights,
        version.tag,
        result=run_dir.train_result,
    )
    proc = subprocess.run(launch.command(args), env=child_env(state.env()))
    if proc.returncode != 0 or not run_dir.train_result.is_file():
        raise RuntimeError(f"distributed training failed (exit {proc.returncode}); see the log above")
    return TrainResult(**json.loads(run_dir.train_result.read_text()))
