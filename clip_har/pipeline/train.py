"""train: fit the classifier on the versioned data, logged to MLflow; a run killed while
training is continued by the next run of the same config, data version and base weights."""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict
from pathlib import Path

from clip_har.config import PipelineConfig
from clip_har.data.versioning import DataVersion
from clip_har.locks import file_lock
from clip_har.pipeline import resume
from clip_har.pipeline.prepare_data import DataRef
from clip_har.pipeline.rundir import RunDir
from clip_har.settings import StateDir, child_env
from clip_har.tracking import client, ensure_experiment
from clip_har.train import launch
from clip_har.train.checkpoint import write_text_atomic
from clip_har.train.trainer import TrainResult, train


def run(
    cfg: PipelineConfig, state: StateDir, data: DataRef, version: DataVersion, base: str | None, run_dir: RunDir
) -> TrainResult:
    """Train into `run_dir`, resuming the newest killed run of the same training identity
    (clip_har.pipeline.resume). `run_dir.train_result` is written last: only a run that has it
    finished training, and only a finished training is evaluated and registered."""
    c = client(state.mlflow_uri)
    experiment_id = ensure_experiment(c, cfg.registry.experiment, state.mlflow_artifacts)
    key = resume.train_key(cfg, version, base)
    with file_lock(run_dir.train_lock) as lock_fd:  # held while training; the OS drops it if we die
        start = resume.begin(c, experiment_id, key, version.tag, run_dir)
        if start.origin is not None:
            done = f"{start.origin.epochs}/{cfg.train.max_epochs} epochs done"
            print(f"resuming training from {start.origin.checkpoint} ({done}), MLflow run {start.run_id}")
        result = _fit(cfg, state, data, version, base, run_dir, start, lock_fd)
        write_text_atomic(run_dir.train_result, json.dumps(asdict(result)))
    return result


def _fit(
    cfg: PipelineConfig,
    state: StateDir,
    data: DataRef,
    version: DataVersion,
    base: str | None,
    run_dir: RunDir,
    start: resume.Start,
    lock_fd: int,
) -> TrainResult:
    """In-process for one device; in a child process for DDP/FSDP (its ranks re-execute it)."""
    base_weights = Path(base) if base else None
    if cfg.train.strategy == "auto" and cfg.train.devices == 1:
        result = train(
            cfg,
            Path(data.root),
            run_dir.root,
            tracking_uri=state.mlflow_uri,
            base_weights=base_weights,
            data_version=version.tag,
            resume=start.resume,
            run_id=start.run_id,
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
        resume=start.resume,
        result=run_dir.train_result,
        run_id=start.run_id,
    )
    # The child holds the run's lock too: if this process dies first, the still-training child
    # is not taken for a killed run.
    proc = subprocess.run(launch.command(args), env=child_env(state.env()), pass_fds=(lock_fd,))
    if proc.returncode != 0 or not run_dir.train_result.is_file():
        raise RuntimeError(f"distributed training failed (exit {proc.returncode}); see the log above")
    return TrainResult(**json.loads(run_dir.train_result.read_text()))
