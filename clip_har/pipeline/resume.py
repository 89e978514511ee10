"""Resume a killed training run instead of starting it over.

A run killed while training (SIGKILL, the OOM killer, a lost node) leaves a run directory with a
`train_key.json`, its checkpoints and no TrainResult. The next run with the same training
identity continues from that run's last checkpoint:

- the identity (`train_key`) is the whole resolved config, the data version and the content of
  the weights training starts from. No config field is left out: every field is an MLflow param
  of the run a resume continues (params cannot change), and nearly all change the result
  (max_epochs through the LR schedule, batch size, seed…); extending a finished run by more
  epochs stays an explicit `clip-har train --resume`;
- the killed run's checkpoints are copied into the new run directory, so evaluation, export and
  registration read one self-contained directory, and its ModelCheckpoint bookkeeping is pointed
  there (best score and top-k survive); the killed run's MLflow run is continued (one metric
  history, one run that finally holds the model);
- a run whose lock is held is still training and is never taken over; a checkpoint that does not
  load is skipped with its reason, and training starts from scratch.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from clip_har.config import PipelineConfig
from clip_har.data.versioning import DataVersion
from clip_har.locks import file_lock, is_locked
from clip_har.pipeline.rundir import RunDir
from clip_har.tracking import create_run
from clip_har.train.checkpoint import (
    LAST,
    CheckpointError,
    checkpoint_files,
    copy_atomic,
    read_checkpoint,
    relocate,
    save_atomic,
    write_text_atomic,
)

RESUME_LOCK = ".resume.lock"  # in the runs folder: one run at a time picks and claims a killed run


@dataclass(frozen=True)
class TrainRecord:
    """What a run directory's `train_key.json` holds, written before training starts."""

    key: str
    mlflow_run_id: str
    started: float  # time.time(); the newest run of a key is the one to resume
    data_version: str
    resumed_from: str = ""  # the killed run's checkpoint this run continued from
    resumed_epochs: int = 0  # epochs that checkpoint had completed


@dataclass(frozen=True)
class Interrupted:
    """A killed run that can be resumed."""

    run_dir: RunDir
    record: TrainRecord
    checkpoint: Path  # its last checkpoint, checked to load
    epochs: int  # epochs it completed


@dataclass(frozen=True)
class Start:
    """How this run's training starts: fresh, or from `resume` (a copy of `origin`'s checkpoint)."""

    run_id: str
    resume: Path | None = None
    origin: Interrupted | None = None


def weights_digest(cfg: PipelineConfig, base: str | None) -> str:
    """sha256 of the weights file training starts from (the pipeline's base weights, else a local
    `model.pretrained` file); empty for an open_clip tag or none, which the config names."""
    name = base or cfg.model.pretrained
    if not name or not Path(name).is_file():
        return ""
    with open(name, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def train_key(cfg: PipelineConfig, version: DataVersion, base: str | None) -> str:
    """The training identity: runs with equal keys would train the same model."""
    src = {
        "config": cfg.model_dump(mode="json"),
        "data": [version.name, version.tag, version.md5],
        "weights": weights_digest(cfg, base),
    }
    return hashlib.sha256(json.dumps(src, sort_keys=True).encode()).hexdigest()[:16]


def read_record(run_dir: RunDir) -> TrainRecord | None:
    try:
        return TrainRecord(**json.loads(run_dir.train_key.read_text()))
    except (OSError, ValueError, TypeError):
        return None  # not started training, an older run, or not a record of ours


def find_interrupted(
    runs: Path, key: str, exclude: RunDir | None = None, note: Callable[[str], None] = print
) -> Interrupted | None:
    """The newest killed run of `key` with a loadable last checkpoint. A newer run of the key
    that finished ends the search (a new run after it is meant to train anew); `note` hears why
    a candidate is passed over."""
    runs = Path(runs)
    dirs = [RunDir(p) for p in sorted(runs.iterdir()) if p.is_dir()] if runs.is_dir() else []
    found = [(rd, rec) for rd in dirs if rd != exclude and (rec := read_record(rd)) and rec.key == key]
    for rd, rec in sorted(found, key=lambda f: f[1].started, reverse=True):
        if rd.train_result.is_file():
            return None
        if rd.resumed_by.is_file():  # another run continued it already
            continue
        if is_locked(rd.train_lock):
            note(f"not resuming run {rd.root.name}: it is still training")
            continue
        try:
            epochs = _check(rd.checkpoints)
        except CheckpointError as exc:
            note(f"not resuming run {rd.root.name}: {exc}")
            continue
        return Interrupted(rd, rec, rd.checkpoints / LAST, epochs)
    return None


def _check(ckpt_dir: Path) -> int:
    """Epochs the last checkpoint completed, once it and the best checkpoint it names load."""
    ckpt = read_checkpoint(ckpt_dir / LAST)
    for name in checkpoint_files(ckpt):
        if Path(name).name != LAST:
            read_checkpoint(ckpt_dir / Path(name).name)  # the model artifact comes from this one
    return int(ckpt["epoch"]) + 1  # last.ckpt is saved at the end of an epoch's validation


def adopt(found: Interrupted, run_dir: RunDir) -> Path:
    """Copy the killed run's checkpoints into `run_dir`; the last one to fit from."""
    ckpt = read_checkpoint(found.checkpoint)
    for name in checkpoint_files(ckpt):
        if Path(name).name != LAST:
            copy_atomic(found.run_dir.checkpoints / Path(name).name, run_dir.checkpoints / Path(name).name)
    return save_atomic(relocate(ckpt, run_dir.checkpoints), run_dir.checkpoints / LAST)


def begin(
    c: MlflowClient,
    experiment_id: str,
    key: str,
    data_version: str,
    run_dir: RunDir,
    note: Callable[[str], None] = print,
) -> Start:
    """Claim the newest killed run of `key` (copy its checkpoints, continue its MLflow run) or
    start fresh, and record this run's identity. Call it holding `run_dir.train_lock`."""
    runs = run_dir.root.parent
    with file_lock(runs / RESUME_LOCK):  # two new runs must not claim the same killed run
        found = find_interrupted(runs, key, run_dir, note)
        resume = adopt(found, run_dir) if found else None
        run_id = _continued(c, found) or create_run(c, experiment_id, {"train_key": key})
        origin = {"resumed_from": str(found.checkpoint), "resumed_epochs": found.epochs} if found else {}
        record = TrainRecord(key, run_id, time.time(), data_version, **origin)
        write_text_atomic(run_dir.train_key, json.dumps(asdict(record), indent=2))
        if found:
            write_text_atomic(found.run_dir.resumed_by, json.dumps({"run_dir": str(run_dir.root)}))
            c.set_tag(run_id, "resumed_from", str(found.checkpoint))
    return Start(run_id, resume, found)


def _continued(c: MlflowClient, found: Interrupted | None) -> str | None:
    """The killed run's MLflow run, unless it is gone (then the resume logs into a new one)."""
    if found is None:
        return None
    try:
        run = c.get_run(found.record.mlflow_run_id)
    except MlflowException:
        return None
    return run.info.run_id if run.info.lifecycle_stage == "active" else None
