"""Explanations: which image regions drive a label, as a heat grid and a PNG overlay.

Two maps, one per image-tower family, both computed for the label's logit (before the softmax,
so the other classes' scores do not leak into the map):

- Convolutional towers (timm, ResNet): Layer-CAM (Jiang et al. 2021), the Grad-CAM family
  member made for maps finer than the last stage's: each cell of a stage's feature map weighted
  by its own positive gradient (Grad-CAM averages the gradient over the map), summed over
  channels. At the demo model's 64 px the last stage is 2×2 cells (stride 32), too coarse to
  tell a phone from the hand holding it, so the map is taken at the deepest stage with at least
  `MIN_CELLS` cells a side (Grad-CAM's usual resolution: a ResNet's last stage at 224 px is 7×7).
  Measured on 70 synthetic scenes of 7 prop classes (prop masks as in tests/test_explain.py),
  on the pre-trained demo champion: Grad-CAM's map held more heat on the prop than on the
  background in 24/70 scenes at the 2×2 stage and 51/70 at 8×8; Layer-CAM at 8×8 in 70/70.
- Vision transformers: gradient-weighted attention rollout (Chefer et al. 2021, "Generic
  attention-model explainability"): each block's attention weighted by its gradient, heads
  averaged, negatives dropped, then rolled out through the residual stream. Grad-CAM does not
  fit a CLIP ViT (its output is the class token: the last block's patch tokens receive no
  gradient), raw attention rollout is the same for every label, and an input-gradient map is
  noisy pixel by pixel; gradient-weighted rollout is label-specific and follows the token mixing of
  every block.

The explained model is this module's own copy (`Explainer.from_dir`): its hooks record only in
the thread that is explaining, so several threads may explain at once.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from clip_har.preprocess import MAX_ASPECT_RATIO, MAX_PIXELS, PreprocessConfig, load_image, normalize, to_pixels

MIN_CELLS = 7  # Layer-CAM: the deepest conv stage whose map has at least this many cells a side
OVERLAY_MAX_SIDE = 512  # the overlay shows the model's centre square, at most this many pixels a side


@dataclass(frozen=True)
class Explanation:
    label: str
    score: float  # the label's probability for this image
    predicted: str  # the model's own top label
    method: str  # "layer-cam:<stage>" or "gradient-rollout"
    grid: np.ndarray  # [h, w] float32 in [0, 1] over the centre square the model sees; 1 = most
    overlay_png: bytes  # the heat over that square of the image, PNG

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, the overlay left out (it is binary)."""
        grid = [[round(float(v), 4) for v in row] for row in self.grid]
        return {
            "label": self.label,
            "score": self.score,
            "predicted": self.predicted,
            "method": self.method,
            "grid": grid,
        }


class _Recording(threading.local):
    """What the hooks saw, in the explaining thread only; `active` is False elsewhere."""

    active = False
    tensors: list[torch.Tensor]


def artifact_dir(model_dir: Path) -> Path:
    """The PyTorch artifact of a model: the directory itself, or its `torch/` (a served model's
    store entry); FileNotFoundError when the model was stored without PyTorch weights."""
    from clip_har.models.artifact import META
    from clip_har.serving.predictor import TORCH_DIR

    model_dir = Path(model_dir)
    for candidate in (model_dir, model_dir / TORCH_DIR):
        if (candidate / META).is_file():
            return candidate
    raise FileNotFoundError(f"model {model_dir} was stored without PyTorch weights: no explanation possible")


class Explainer:
    """Heat maps for one model; build with `from_dir`. Thread-safe."""

    def __init__(self, model: nn.Module, classes: list[str], preprocess: PreprocessConfig) -> None:
        self.model, self.classes, self.preprocess = model.eval(), list(classes), preprocess
        self._rec = _Recording()
        self.visual = model.visual  # type: ignore[union-attr]
        if hasattr(self.visual, "transformer"):
            self._map, self.method = self._rollout, "gradient-rollout"
            _patch_attention(self.visual, self._rec)
        else:
            stage_name, stage = _cam_stage(self.visual, preprocess.image_size)
            stage.register_forward_hook(self._keep_output)
            self._map, self.method = self._layer_cam, f"layer-cam:{stage_name}"

    @classmethod
    def from_dir(cls, model_dir: Path) -> Explainer:
        from clip_har.models.artifact import load_model

        model, _, meta = load_model(artifact_dir(model_dir))
        return cls(model, meta.classes, meta.preprocess_config())

    def explain_bytes(self, data: bytes, label: str | None = None, max_pixels: int = MAX_PIXELS) -> Explanation:
        """An uploaded image (the service's decode and limits: ValueError with the reason)."""
        return self.explain_image(load_image(data, max_pixels, MAX_ASPECT_RATIO), label)

    def explain_image(self, im: Image.Image, label: str | None = None) -> Explanation:
        """`label`: a class name; None explains the predicted one."""
        index = None if label is None else self.class_index(label)
        grid, probs = self.explain_pixels(to_pixels(im, self.preprocess), index)
        index = int(probs.argmax()) if index is None else index
        return Explanation(
            label=self.classes[index],
            score=float(probs[index]),
            predicted=self.classes[int(probs.argmax())],
            method=self.method,
            grid=grid,
            overlay_png=overlay_png(centre_square(im), grid),
        )

    def class_index(self, label: str) -> int:
        if label not in self.classes:
            raise ValueError(f"unknown label {label!r}; this model's labels are {', '.join(self.classes)}")
        return self.classes.index(label)

    def explain_pixels(self, pixels: np.ndarray, index: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [3,S,S] pixels → (grid [h,w] in [0,1], class probabilities [C]); `index`: the
        class explained (None: the predicted one)."""
        x = torch.from_numpy(normalize(pixels[None], self.preprocess)).requires_grad_(True)
        with self._recording() as seen, torch.enable_grad():
            logits = self.model(x)[0]
            target = int(logits.argmax()) if index is None else index
            heat = self._map(logits[target], seen)
        probs = torch.softmax(logits.detach(), -1).numpy()
        return _unit(heat.detach().numpy().astype(np.float32)), probs

    @contextmanager
    def _recording(self) -> Iterator[list[torch.Tensor]]:
        self._rec.active, self._rec.tensors = True, []
        try:
            yield self._rec.tensors
        finally:
            self._rec.active, self._rec.tensors = False, []

    def _keep_output(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        if self._rec.active:
            self._rec.tensors.append(output)

    @staticmethod
    def _layer_cam(score: torch.Tensor, seen: list[torch.Tensor]) -> torch.Tensor:
        (features,) = seen  # [1, C, h, w]
        (grads,) = torch.autograd.grad(score, features)
        return F.relu((F.relu(grads) * features).sum(dim=1))[0]

    def _rollout(self, score: torch.Tensor, seen: list[torch.Tensor]) -> torch.Tensor:
        grads = torch.autograd.grad(score, seen)
        tokens = seen[0].shape[-1]
        rollout = torch.eye(tokens)
        for attn, grad in zip(seen, grads, strict=True):  # [1, heads, N, N] each, input to output
            weighted = (grad * attn).clamp(min=0).mean(dim=1)[0]
            rollout = rollout + weighted @ rollout
        h, w = _grid_size(self.visual)
        prefix = tokens - h * w  # the class token (and any others) before the patches
        if getattr(self.visual, "pool_type", "tok") == "avg":
            relevance = rollout[prefix:, prefix:].mean(dim=0)
        else:
            relevance = rollout[0, prefix:]
        return relevance.reshape(h, w)


class LatestExplainer:
    """One model's explainer at a time (a service keeps the served model's): a request for
    another key builds that one, in place of the last. Thread-safe."""

    def __init__(self) -> None:
        self._key: str | None = None
        self._explainer: Explainer | None = None
        self._lock = threading.Lock()  # one build at a time

    def get(self, key: str, model_dir: Path) -> Explainer:
        """FileNotFoundError when the model was stored without PyTorch weights."""
        with self._lock:
            if self._explainer is None or key != self._key:
                self._explainer, self._key = Explainer.from_dir(model_dir), key
            return self._explainer


def _unit(heat: np.ndarray) -> np.ndarray:
    """Scaled to [0, 1] by its maximum (the CAM convention); all zeros when nothing is positive."""
    heat = np.nan_to_num(np.maximum(heat, 0.0))
    top = float(heat.max()) if heat.size else 0.0
    return heat / top if top > 0 else np.zeros_like(heat)


def _cam_stage(visual: nn.Module, size: int) -> tuple[str, nn.Module]:
    """The deepest block with a 4-D map of at least MIN_CELLS cells a side (else the deepest 4-D one)."""
    from clip_har.models.classifier import visual_blocks

    blocks = visual_blocks(visual)
    shapes: dict[int, torch.Size] = {}
    hooks = [
        b.register_forward_hook(lambda _m, _i, out, i=i: shapes.__setitem__(i, out.shape)) for i, b in enumerate(blocks)
    ]
    try:
        with torch.no_grad():
            visual(torch.zeros(1, 3, size, size))
    finally:
        for h in hooks:
            h.remove()
    maps = [i for i in sorted(shapes) if len(shapes[i]) == 4]
    if not maps:
        raise ValueError(f"no convolutional stage to explain in {type(visual).__name__}")
    wide = [i for i in maps if min(shapes[i][2:]) >= MIN_CELLS]
    chosen = blocks[(wide or maps)[-1]]
    name = next(n for n, m in visual.named_modules() if m is chosen)
    return name.removeprefix("trunk."), chosen


def _grid_size(visual: nn.Module) -> tuple[int, int]:
    grid = getattr(visual, "grid_size", None)
    if grid is None:
        raise ValueError(f"cannot tell the patch grid of {type(visual).__name__}")
    return (grid, grid) if isinstance(grid, int) else (int(grid[0]), int(grid[1]))


def _patch_attention(visual: nn.Module, rec: _Recording) -> None:
    """Each block's attention computes its weights explicitly (and records them) while `rec` is
    active; otherwise it is the block's own fused attention, untouched."""
    for block in visual.transformer.resblocks:  # type: ignore[union-attr]
        mha = getattr(block, "attn", None)
        if not isinstance(mha, nn.MultiheadAttention) or not hasattr(block, "attention"):
            raise ValueError(f"cannot explain attention of {type(block).__name__} blocks")
        block.attention = _recording_attention(block.attention, mha, rec)


def _recording_attention(original: Callable[..., torch.Tensor], mha: nn.MultiheadAttention, rec: _Recording):
    def attention(
        q_x: torch.Tensor, k_x: torch.Tensor | None = None, v_x: torch.Tensor | None = None, attn_mask: Any = None
    ) -> torch.Tensor:
        if not rec.active or k_x is not None or v_x is not None or attn_mask is not None:
            return original(q_x, k_x=k_x, v_x=v_x, attn_mask=attn_mask)
        x = q_x if mha.batch_first else q_x.transpose(0, 1)  # [B, N, D]
        b, n, d = x.shape
        heads = mha.num_heads
        q, k, v = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(b, n, heads, d // heads).transpose(1, 2) for t in (q, k, v))
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // heads), dim=-1)  # [B, heads, N, N]
        rec.tensors.append(weights)
        out = mha.out_proj((weights @ v).transpose(1, 2).reshape(b, n, d))
        return out if mha.batch_first else out.transpose(0, 1)

    return attention


def centre_square(im: Image.Image) -> Image.Image:
    """The part of the image the model sees (preprocess.to_pixels crops the same square)."""
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return im.crop((left, top, left + side, top + side))


def upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """The grid as a size×size map (bilinear, cell centres aligned), values still in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(grid, dtype=np.float32))[None, None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0, 0].clamp(0, 1).numpy()


# A perceptually ordered dark-to-bright colour ramp (approximately matplotlib's "inferno"),
# interpolated here so the library needs no plotting package.
_RAMP = np.array(
    [
        (0, 0, 4),
        (40, 11, 84),
        (101, 21, 110),
        (159, 42, 99),
        (212, 72, 66),
        (245, 125, 21),
        (250, 193, 39),
        (252, 255, 164),
    ],
    dtype=np.float32,
)


def colorize(heat: np.ndarray) -> np.ndarray:
    """[h, w] in [0, 1] → uint8 RGB [h, w, 3] on the ramp."""
    pos = np.clip(heat, 0, 1) * (len(_RAMP) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_RAMP) - 2)
    frac = (pos - lo)[..., None]
    return (_RAMP[lo] * (1 - frac) + _RAMP[lo + 1] * frac).round().astype(np.uint8)


def overlay_png(square: Image.Image, grid: np.ndarray, alpha: float = 0.5) -> bytes:
    """The heat blended over the image's centre square (at most OVERLAY_MAX_SIDE px), as PNG."""
    side = min(square.width, OVERLAY_MAX_SIDE)
    base = np.asarray(square.convert("RGB").resize((side, side), Image.Resampling.BILINEAR), dtype=np.float32)
    heat = upsample(grid, side)
    blended = base * (1 - alpha * heat[..., None]) + colorize(heat).astype(np.float32) * alpha * heat[..., None]
    buf = io.BytesIO()
    Image.fromarray(blended.clip(0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
