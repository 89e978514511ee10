"""The classifier: CLIP image tower + linear head initialised from prompt text embeddings.

At step 0 it is exactly CLIP zero-shot: logits = exp(logit_scale) * normalise(image) @ W, with W
the normalised mean prompt embedding per class (open_clip's build_zero_shot_classifier).
"""

from __future__ import annotations

from collections.abc import Sequence

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from clip_har.models.presets import ClipBundle

TRAIN_MODES = ("linear_probe", "last_n", "full")


class CLIPClassifier(nn.Module):
    def __init__(self, visual: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.visual = visual
        self.head = head

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def zero_shot_weights(bundle: ClipBundle, phrases: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """[D, C] normalised class embeddings from the text tower."""
    was_training = bundle.model.training
    bundle.model.eval()
    w = open_clip.build_zero_shot_classifier(
        bundle.model, tokenizer=bundle.tokenizer, classnames=list(phrases), templates=list(templates), device="cpu"
    )
    bundle.model.train(was_training)
    return w


def build_classifier(bundle: ClipBundle, phrases: Sequence[str], templates: Sequence[str]) -> CLIPClassifier:
    w = zero_shot_weights(bundle, phrases, templates)
    head = nn.Linear(w.shape[0], w.shape[1])
    with torch.no_grad():
        head.weight.copy_(bundle.model.logit_scale.exp() * w.T)
        head.bias.zero_()
    return CLIPClassifier(bundle.model.visual, head)


def visual_blocks(visual: nn.Module) -> list[nn.Module]:
    """The image tower's blocks in input→output order, whatever its family (ViT, ResNet, timm)."""
    if hasattr(visual, "transformer"):  # open_clip VisionTransformer
        return list(visual.transformer.resblocks)  # type: ignore[union-attr]
    if hasattr(visual, "trunk"):  # open_clip TimmModel: trunk stages with parameters
        return [m for m in visual.trunk.children() if any(True for _ in m.parameters())]  # type: ignore[union-attr]
    return [m for m in visual.children() if any(True for _ in m.parameters())]


def _output_layers(visual: nn.Module) -> list[nn.Module | nn.Parameter]:
    """What maps the last block to the embedding: always trained outside linear-probe mode."""
    out: list[nn.Module | nn.Parameter] = []
    for name in ("ln_post", "proj", "head", "attnpool"):
        part = getattr(visual, name, None)
        if isinstance(part, nn.Module | nn.Parameter):
            out.append(part)
    return out


def set_trainable(model: CLIPClassifier, mode: str, last_n: int = 2) -> int:
    """Freeze per training mode; returns the number of trainable parameters."""
    if mode not in TRAIN_MODES:
        raise ValueError(f"unknown training mode {mode!r}; choose one of {TRAIN_MODES}")
    model.visual.requires_grad_(mode == "full")
    model.head.requires_grad_(True)
    if mode == "last_n":
        blocks = visual_blocks(model.visual)
        for block in blocks[max(0, len(blocks) - last_n) :]:
            block.requires_grad_(True)
        for part in _output_layers(model.visual):
            part.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
