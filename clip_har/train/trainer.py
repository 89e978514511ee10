"""Fit the classifier with Lightning: strategy/precision from config, best + last checkpoints
(written atomically), resume, early stopping, MLflow logging, and the model artifact written by
rank 0 only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger

from clip_har.config import PipelineConfig, phrases_for
from clip_har.data.datamodule import HARDataModule
from clip_har.models.artifact import ModelMeta, save_model
from clip_har.models.classifier import set_trainable
from clip_har.models.factory import build_model
from clip_har.pipeline.rundir import RunDir
from clip_har.preprocess import PreprocessConfig
from clip_har.tracking import flatten, git_sha
from clip_har.train.checkpoint import LAST, AtomicCheckpointIO
from clip_har.train.module import HARModule

MONITOR = "val_f1"


@dataclass
class TrainResult:
    run_id: str
    model_dir: str
    best_checkpoint: str
    last_checkpoint: str
    best_val_f1: float
    epochs: int
    resumed_from: str = ""  # the checkpoint this fit continued from; empty when it started fresh


def make_strategy(cfg: PipelineConfig):  # a Lightning strategy or its name
    """`fsdp` means FSDPStrategy on GPUs and FSDP2 (ModelParallelStrategy) where there are none."""
    t = cfg.train
    if t.strategy == "ddp":
        return "ddp"  # Lightning picks gloo on CPU, nccl on GPUs
    if t.strategy == "fsdp":
        if torch.cuda.is_available() and t.accelerator in ("auto", "gpu", "cuda"):
            from lightning.pytorch.strategies import FSDPStrategy

            return FSDPStrategy(state_dict_type="full")
        from lightning.pytorch.strategies import ModelParallelStrategy

        return ModelParallelStrategy(
            data_parallel_size=t.devices * t.num_nodes, tensor_parallel_size=1, save_distributed_checkpoint=False
        )
    return "auto"


def _accelerator(cfg: PipelineConfig) -> str:
    if cfg.train.strategy == "fsdp" and not torch.cuda.is_available():
        return "cpu"
    return cfg.train.accelerator


def _best_state(ckpt: Path) -> dict[str, torch.Tensor]:
    """Classifier weights from a Lightning checkpoint (full, unsharded state dict)."""
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}


def train(
    cfg: PipelineConfig,
    data_root: Path,
    out_dir: Path,
    *,
    tracking_uri: str,
    base_weights: Path | None = None,
    data_version: str = "unversioned",
    resume: Path | None = None,
    run_id: str | None = None,
) -> TrainResult | None:
    """Train and write `out_dir/model`; returns None on non-zero ranks. `run_id`: log into this
    MLflow run (e.g. the one a resumed run started) instead of a new one."""
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    bundle, model = build_model(cfg, base_weights)
    set_trainable(model, cfg.train.mode, cfg.train.last_n)
    pre = PreprocessConfig(bundle.image_size, bundle.mean, bundle.std)
    dm = HARDataModule(
        data_root, cfg.data.classes, pre, cfg.train.batch_size, cfg.train.num_workers, cfg.train.cache_images
    )
    t = cfg.train
    sha = git_sha()
    module = HARModule(model, len(cfg.data.classes), t.lr, t.head_lr, t.weight_decay, t.label_smoothing)
    tags = {"data_version": data_version, "git_sha": sha, "profile": cfg.profile}
    # Only rank 0 talks to MLflow: under torchrun every rank of every node starts at once, and a
    # client in each would race to create (migrate) a SQLite tracking store
    logger = (
        MLFlowLogger(experiment_name=cfg.registry.experiment, tracking_uri=tracking_uri, tags=tags, run_id=run_id)
        if rank_zero_only.rank == 0
        else False
    )
    run_dir = RunDir(Path(out_dir))
    ckpt_dir = run_dir.checkpoints
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=MONITOR, mode="max")
    # Every epoch, after `best`: Lightning 2.6's save_last writes last.ckpt only in the epochs
    # that also save a top-k checkpoint, so a resume would redo every epoch since the best one.
    last = ModelCheckpoint(dirpath=ckpt_dir, filename=Path(LAST).stem, monitor=None, enable_version_counter=False)
    trainer = L.Trainer(
        max_epochs=t.max_epochs,
        accelerator=_accelerator(cfg),
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=make_strategy(cfg),
        precision=t.precision,  # type: ignore[arg-type]
        logger=logger,
        plugins=[AtomicCheckpointIO()],  # a kill mid-save must not leave a truncated last.ckpt
        callbacks=[checkpoint, last, EarlyStopping(monitor=MONITOR, mode="max", patience=t.early_stopping_patience)],
        log_every_n_steps=5,
        enable_progress_bar=True,
        enable_model_summary=False,
        deterministic=False,
    )
    if trainer.is_global_zero:
        if run_id:  # the logger tags only the runs it creates itself
            for k, v in tags.items():
                logger.experiment.set_tag(run_id, k, v)
        logger.log_hyperparams({**flatten(cfg.model_dump()), "data_version": data_version})
    module.train()  # open_clip builds in eval mode; Lightning keeps submodule modes as found
    trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume else None)
    if not trainer.is_global_zero:
        return None
    best = Path(checkpoint.best_model_path or last.best_model_path)
    # A fresh, unsharded copy: under FSDP the trained module holds DTensor shards.
    bundle, model = build_model(cfg, base_weights)
    model.load_state_dict(_best_state(best))
    meta = ModelMeta(
        preset=cfg.model.preset,
        classes=list(cfg.data.classes),
        phrases=phrases_for(cfg),
        templates=list(cfg.model.templates),
        preprocess=pre.to_dict(),
        lineage={"data_version": data_version, "mlflow_run_id": logger.run_id or "", "git_sha": sha},
    )
    model_dir = save_model(model, bundle, meta, run_dir.model)
    score = checkpoint.best_model_score
    return TrainResult(
        run_id=logger.run_id or "",
        model_dir=str(model_dir),
        best_checkpoint=str(best),
        last_checkpoint=str(ckpt_dir / LAST),
        best_val_f1=float(score) if score is not None else float("nan"),
        epochs=trainer.current_epoch,
        resumed_from=str(resume) if resume else "",
    )
