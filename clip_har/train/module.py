"""LightningModule for the classifier: receives the network from outside, owns loss/optim and the
device-side half of preprocessing (uint8 batches are normalised, and mirrored in training, there)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.strategies import SingleDeviceStrategy, Strategy
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from clip_har.models.classifier import CLIPClassifier, visual_blocks


def is_convnet(visual: nn.Module) -> bool:
    """An image tower made of convolutions (ResNet, ConvNeXt…): a ViT has one, its patch embedding."""
    return sum(isinstance(m, nn.Conv2d) for m in visual.modules()) > 1


def wants_channels_last(visual: nn.Module, device: torch.device, distributed: bool) -> bool:
    """Channels-last pays where it was measured to (convolutions on CPU, ~25-50% faster) and
    nowhere else: a ViT gains nothing, and under DDP/FSDP a changed memory format breaks
    flat-parameter views (FSDP1's `param.view(-1)`) or fights with the sharded layout."""
    return device.type == "cpu" and not distributed and is_convnet(visual)


def is_distributed(strategy: Strategy) -> bool:
    """DDP, FSDP2 (ModelParallelStrategy)…: anything but one plain device, even with one process."""
    return not isinstance(strategy, SingleDeviceStrategy)


def random_hflip(x: torch.Tensor) -> torch.Tensor:
    """Mirror each image independently with probability 1/2 (mirror images are the same action)."""
    mirror = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(mirror[:, None, None, None], x.flip(-1), x)


def normalize_pixels(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, S, S] → float32, as `preprocess.normalize` does on the host: the same float32
    operations in the same order, so the values match it. In place after the one copy that
    `float()` makes; keeps the memory format of `x`."""
    return x.float().div_(255.0).sub_(mean.float()).div_(std.float())


def prepare_images(
    x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, *, flip: bool, channels_last: bool
) -> torch.Tensor:
    """A batch as it reaches the device → the model's input. Flipping and the layout change run on
    the uint8 pixels (a quarter of the bytes); float batches are taken as already normalised."""
    if flip:
        x = random_hflip(x)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if x.dtype == torch.uint8:
        x = normalize_pixels(x, mean, std)
    return x


def adamw_kwargs(params: Iterable[torch.Tensor]) -> dict[str, Any]:
    """Fused AdamW (one kernel for all parameters) where they all live on CUDA GPUs; PyTorch's
    default elsewhere (the CPU demo measured no gain to chase)."""
    devices = {p.device.type for p in params}
    return {"fused": True} if devices == {"cuda"} else {}


def compile_in_place(model: CLIPClassifier, sharded: bool, backend: str = "inductor") -> None:
    """torch.compile without renaming parameters (`_orig_mod.` would break checkpoints and
    `_best_state`). Sharded (FSDP2): each image-tower block's forward, so FSDP's gather/free hooks
    stay outside the compiled graphs; otherwise the whole classifier."""
    if sharded:
        for block in visual_blocks(model.visual):
            block.forward = torch.compile(block.forward, backend=backend)  # type: ignore[method-assign]
    else:
        model.compile(backend=backend)


class HARModule(L.LightningModule):
    def __init__(
        self,
        model: CLIPClassifier,
        num_classes: int,
        lr: float = 1e-3,
        head_lr: float | None = None,
        weight_decay: float = 0.05,
        label_smoothing: float = 0.0,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        compile_model: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.save_hyperparameters(ignore=["model"])
        # Not persistent: normalisation travels in the artifact's metadata; checkpoints keep only
        # `model.*` weights, as before, so older ones still load strictly.
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_f1 = MulticlassF1Score(num_classes=num_classes, average="macro")
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self._channels_last = False
        self._compiled = False

    def configure_model(self) -> None:
        """FSDP2 (ModelParallelStrategy): shard each image-tower block, then the whole model; then
        compile, when asked (the trainer asks only on CUDA)."""
        mesh = self.device_mesh
        if mesh is not None:
            from torch.distributed.fsdp import fully_shard

            dp = mesh["data_parallel"]
            for block in visual_blocks(self.model.visual):
                if any(p.requires_grad for p in block.parameters()):
                    fully_shard(block, mesh=dp)
            fully_shard(self.model, mesh=dp)
        if self.hparams.compile_model and not self._compiled:
            compile_in_place(self.model, sharded=mesh is not None)
            self._compiled = True

    def on_fit_start(self) -> None:
        self._channels_last = wants_channels_last(self.model.visual, self.device, is_distributed(self.trainer.strategy))
        if self._channels_last:
            self.model.to(memory_format=torch.channels_last)

    def on_fit_end(self) -> None:
        if self._channels_last:
            self.model.to(memory_format=torch.contiguous_format)
            self._channels_last = False

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Normalise on the device; mirror at random in training only. Lightning puts the module in
        eval mode for validation/test/predict before their batches are fetched."""
        x, y = batch
        x = prepare_images(x, self.pixel_mean, self.pixel_std, flip=self.training, channels_last=self._channels_last)
        if self._trainer is not None:  # its precision's input dtype (bf16-true…): it saw uint8 before the transfer
            x = self.trainer.precision_plugin.convert_input(x)
        return x, y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        self.train_acc(logits, y)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, sync_dist=True)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True, sync_dist=True)
        self.val_acc(logits, y)
        self.val_f1(logits, y)
        self.log("val_acc", self.val_acc, prog_bar=True)
        self.log("val_f1", self.val_f1, prog_bar=True)

    def configure_optimizers(self):  # Lightning's own union type
        head = [p for p in self.model.head.parameters() if p.requires_grad]
        head_ids = {id(p) for p in head}
        body = [p for p in self.model.parameters() if p.requires_grad and id(p) not in head_ids]
        groups = [{"params": head, "lr": self.hparams.head_lr or self.hparams.lr}]
        if body:
            groups.append({"params": body, "lr": self.hparams.lr})
        # Lightning moves the model to its device before it asks for optimizers.
        opt = torch.optim.AdamW(groups, weight_decay=self.hparams.weight_decay, **adamw_kwargs(head + body))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, int(0.1 * total))

        def factor(step: int) -> float:
            # Linear warm-up then cosine decay; a plain function of the step, so resuming with a
            # larger max_epochs just stretches the remaining schedule instead of overflowing it.
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
