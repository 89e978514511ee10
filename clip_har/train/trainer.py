"""Fit the classifier with Lightning: strategy/precision from config, best + last checkpoints
(written atomically), resume, early stopping, MLflow logging (or none: CSV metrics in the run
dir), and the model artifact written by rank 0 only. Imports no MLflow unless a tracking URI is
given, so it trains on machines that have none (the GPU image).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger

from clip_har.config import PipelineConfig, TrainConfig, phrases_for
from clip_har.data.datamodule import HARDataModule
from clip_har.models.artifact import ModelMeta, save_model
from clip_har.models.classifier import CLIPClassifier, set_trainable
from clip_har.models.factory import build_model
from clip_har.pipeline.rundir import RunDir
from clip_har.preprocess import PreprocessConfig
from clip_har.tracking import flatten, git_sha
from clip_har.train.checkpoint import LAST, AtomicCheckpointIO
from clip_har.train.module import HARModule

MONITOR = "val_f1"
log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_id: str  # the MLflow run; empty when trained without MLflow
    model_dir: str
    best_checkpoint: str
    last_checkpoint: str
    best_val_f1: float
    epochs: int
    resumed_from: str = ""  # the checkpoint this fit continued from; empty when it started fresh


def on_cuda(t: TrainConfig) -> bool:
    """Whether the fit runs on CUDA GPUs (Lightning's `auto` picks them wherever there are some)."""
    return t.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def resolve_precision(t: TrainConfig, cuda: bool, bf16: bool) -> str:
    """`auto`: bf16 autocast on GPUs with native bf16 (no loss scaling needed); fp16 autocast
    with loss scaling on older GPUs (V100, T4), except under FSDP, whose ModelParallelStrategy
    accepts no `16-mixed`; float32 on CPUs, as the CPU demo always trained. Any other value is
    Lightning's own and passes through."""
    if t.precision != "auto":
        return t.precision
    if not cuda:
        return "32-true"
    if bf16:
        return "bf16-mixed"
    return "32-true" if t.strategy == "fsdp" else "16-mixed"


def make_strategy(cfg: PipelineConfig):  # a Lightning strategy or its name
    """`fsdp` is FSDP2 (ModelParallelStrategy + `fully_shard` in HARModule.configure_model) on GPUs
    and CPUs alike; FSDP1 (FSDPStrategy) is not used. DDP and FSDP span devices × num_nodes."""
    t = cfg.train
    if t.strategy == "ddp":
        return "ddp"  # Lightning picks gloo on CPU, nccl on GPUs
    if t.strategy == "fsdp":
        from lightning.pytorch.strategies import ModelParallelStrategy

        return ModelParallelStrategy(
            data_parallel_size=t.devices * t.num_nodes, tensor_parallel_size=1, save_distributed_checkpoint=False
        )
    return "auto"


def _accelerator(cfg: PipelineConfig) -> str:
    if cfg.train.strategy == "fsdp" and not torch.cuda.is_available():
        return "cpu"
    return cfg.train.accelerator


def use_compile(t: TrainConfig, cuda: bool) -> bool:
    """torch.compile on CUDA only, where it was measured (ViT-B-32: +50% img/s). On CPU, Inductor
    needs a C++ toolchain a CPU machine need not have, and its warm-up would eat into a few-minute
    demo fit for a gain nobody measured: ignored, saying so."""
    if t.compile and not cuda and rank_zero_only.rank == 0:
        log.warning("train.compile is ignored: it applies on CUDA GPUs only, and this fit runs on CPU")
    return t.compile and cuda


def _best_state(ckpt: Path) -> dict[str, torch.Tensor]:
    """Classifier weights from a Lightning checkpoint (full, unsharded state dict)."""
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}


def _logger(
    cfg: PipelineConfig, tracking_uri: str | None, run_dir: RunDir, tags: dict[str, str], run_id: str | None
) -> Logger | bool:
    """MLflow when there is a tracking URI, else CSV metrics under the run dir. Only rank 0 talks to
    MLflow: under torchrun every rank of every node starts at once, and a client in each would
    race to create (migrate) a SQLite tracking store."""
    if rank_zero_only.rank != 0:
        return False
    if not tracking_uri:
        return CSVLogger(run_dir.root, name="metrics")
    from lightning.pytorch.loggers import MLFlowLogger  # MLflow only when asked for

    return MLFlowLogger(experiment_name=cfg.registry.experiment, tracking_uri=tracking_uri, tags=tags, run_id=run_id)


def _log_params(logger: Logger, cfg: PipelineConfig, tags: dict[str, str], run_id: str | None) -> None:
    if run_id and hasattr(logger, "run_id"):  # MLflow tags only the runs it creates itself
        for k, v in tags.items():
            logger.experiment.set_tag(run_id, k, v)
    logger.log_hyperparams({**flatten(cfg.model_dump()), "data_version": tags["data_version"]})


def _trainer(
    cfg: PipelineConfig, ckpt_dir: Path, logger: Logger | bool, cuda: bool, extra: Sequence[Callback] = ()
) -> tuple[L.Trainer, ModelCheckpoint, ModelCheckpoint]:
    """The Trainer, its `best` checkpoint callback and its every-epoch `last` one."""
    t = cfg.train
    bf16 = cuda and torch.cuda.is_bf16_supported(including_emulation=False)  # emulated bf16 is slow
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=MONITOR, mode="max")
    # Every epoch, after `best`: Lightning 2.6's save_last writes last.ckpt only in the epochs
    # that also save a top-k checkpoint, so a resume would redo every epoch since the best one.
    last = ModelCheckpoint(dirpath=ckpt_dir, filename=Path(LAST).stem, monitor=None, enable_version_counter=False)
    trainer = L.Trainer(
        max_epochs=t.max_epochs,
        accelerator=_accelerator(cfg),
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=make_strategy(cfg),
        precision=resolve_precision(t, cuda, bf16),  # type: ignore[arg-type]
        logger=logger,
        plugins=[AtomicCheckpointIO()],  # a kill mid-save must not leave a truncated last.ckpt
        callbacks=[
            best,
            last,
            EarlyStopping(monitor=MONITOR, mode="max", patience=t.early_stopping_patience),
            *extra,
        ],
        log_every_n_steps=5,
        enable_progress_bar=True,
        enable_model_summary=False,
        deterministic=False,
    )
    return trainer, best, last


def _module(cfg: PipelineConfig, model: CLIPClassifier, pre: PreprocessConfig, cuda: bool) -> HARModule:
    t = cfg.train
    hyper = (t.lr, t.head_lr, t.weight_decay, t.label_smoothing)
    compile_model = use_compile(t, cuda)
    return HARModule(model, len(cfg.data.classes), *hyper, mean=pre.mean, std=pre.std, compile_model=compile_model)


def train(
    cfg: PipelineConfig,
    data_root: Path,
    out_dir: Path,
    *,
    tracking_uri: str | None,
    base_weights: Path | None = None,
    data_version: str = "unversioned",
    resume: Path | None = None,
    run_id: str | None = None,
    callbacks: Sequence[Callback] = (),
) -> TrainResult | None:
    """Train and write `out_dir/model`; returns None on non-zero ranks. `tracking_uri` empty or
    None: no MLflow (run_id ""). `run_id`: log into this MLflow run (e.g. the one a resumed run
    started) instead of a new one. `callbacks`: more Lightning callbacks (bench/gpu.py's meter)."""
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    t, cuda = cfg.train, on_cuda(cfg.train)
    bundle, model = build_model(cfg, base_weights)
    set_trainable(model, t.mode, t.last_n)
    pre = PreprocessConfig(bundle.image_size, bundle.mean, bundle.std)
    dm = HARDataModule(data_root, cfg.data.classes, pre, t.batch_size, t.num_workers, t.cache_images, pin_memory=cuda)
    module = _module(cfg, model, pre, cuda)
    sha = git_sha()
    tags = {"data_version": data_version, "git_sha": sha, "profile": cfg.profile}
    run_dir = RunDir(Path(out_dir))
    logger = _logger(cfg, tracking_uri, run_dir, tags, run_id)
    trainer, checkpoint, last = _trainer(cfg, run_dir.checkpoints, logger, cuda, callbacks)
    if trainer.is_global_zero and logger:
        _log_params(logger, cfg, tags, run_id)
    module.train()  # open_clip builds in eval mode; Lightning keeps submodule modes as found
    trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume else None)
    if not trainer.is_global_zero:
        return None
    mlflow_run = getattr(logger, "run_id", None) or ""
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
        lineage={"data_version": data_version, "mlflow_run_id": mlflow_run, "git_sha": sha},
    )
    model_dir = save_model(model, bundle, meta, run_dir.model)
    score = checkpoint.best_model_score
    return TrainResult(
        run_id=mlflow_run,
        model_dir=str(model_dir),
        best_checkpoint=str(best),
        last_checkpoint=str(run_dir.checkpoints / LAST),
        best_val_f1=float(score) if score is not None else float("nan"),
        epochs=trainer.current_epoch,
        resumed_from=str(resume) if resume else "",
    )
