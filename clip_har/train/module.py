"""LightningModule for the classifier: receives the network from outside, owns loss/optim."""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from clip_har.models.classifier import CLIPClassifier, visual_blocks


class HARModule(L.LightningModule):
    def __init__(
        self,
        model: CLIPClassifier,
        num_classes: int,
        lr: float = 1e-3,
        head_lr: float | None = None,
        weight_decay: float = 0.05,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.save_hyperparameters(ignore=["model"])
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_f1 = MulticlassF1Score(num_classes=num_classes, average="macro")
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")

    def configure_model(self) -> None:
        """FSDP2 (ModelParallelStrategy): shard each image-tower block, then the whole model."""
        mesh = self.device_mesh
        if mesh is None:
            return
        from torch.distributed.fsdp import fully_shard

        dp = mesh["data_parallel"]
        for block in visual_blocks(self.model.visual):
            if any(p.requires_grad for p in block.parameters()):
                fully_shard(block, mesh=dp)
        fully_shard(self.model, mesh=dp)

    def on_fit_start(self) -> None:
        if self.device_mesh is None:  # channels-last convs are ~25-50% faster on CPU
            self.model.to(memory_format=torch.channels_last)

    def on_fit_end(self) -> None:
        if self.device_mesh is None:
            self.model.to(memory_format=torch.contiguous_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
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
        opt = torch.optim.AdamW(groups, weight_decay=self.hparams.weight_decay)
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
