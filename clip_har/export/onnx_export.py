"""ONNX export of the classifier (image tower + head → logits, normalised embedding) and of
the text tower (tokens → normalised text embedding), plus the metadata that travels with them.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from clip_har.data.manifest import sha256_file, staged_dir
from clip_har.models.artifact import ModelMeta, load_model

IMAGE_ONNX = "image.onnx"
TEXT_ONNX = "text.onnx"
ONNX_META = "onnx_meta.json"
OPSET = 17


class _ImageGraph(nn.Module):
    """What the image ONNX graph computes: logits and the normalised embedding."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.model.embed(pixel_values)
        return self.model.head(emb), emb


class _TextGraph(nn.Module):
    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_text(tokens, normalize=True)


@dataclass
class OnnxMeta:
    """Everything a runtime needs besides the graphs; nothing is re-declared elsewhere."""

    model: ModelMeta
    logit_scale: float
    context_length: int
    image_sha256: str
    text_sha256: str
    opset: int = OPSET

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def load(cls, directory: Path) -> OnnxMeta:
        raw = json.loads((Path(directory) / ONNX_META).read_text())
        return cls(**{**raw, "model": ModelMeta(**raw["model"])})


def _export(module: nn.Module, example: torch.Tensor, path: Path, inputs: list[str], outputs: list[str]) -> None:
    axes = {name: {0: "batch"} for name in inputs + outputs}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # nn.MultiheadAttention's eval fast path is a fused op with no ONNX symbolic.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        _export_plain(module, example, path, inputs, outputs, axes)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _export_plain(
    module: nn.Module, example: torch.Tensor, path: Path, inputs: list[str], outputs: list[str], axes: dict
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def export_onnx(model_dir: Path, dest: Path) -> OnnxMeta:
    """Export both towers of a model artifact into `dest` (atomically)."""
    model, bundle, meta = load_model(Path(model_dir))
    s = meta.preprocess_config().image_size
    # Batch 2, not 1: a batch-1 example can silently pin the batch axis.
    image_example = torch.zeros(2, 3, s, s)
    ctx = int(bundle.model.context_length)
    tokens = bundle.tokenizer(["a photo of a person running.", "someone texting."])  # type: ignore[operator]
    with staged_dir(dest) as tmp, torch.no_grad():
        _export(_ImageGraph(model).eval(), image_example, tmp / IMAGE_ONNX, ["pixel_values"], ["logits", "embedding"])
        _export(_TextGraph(bundle.model).eval(), tokens, tmp / TEXT_ONNX, ["tokens"], ["text_embedding"])
        onnx_meta = OnnxMeta(
            model=meta,
            logit_scale=float(bundle.model.logit_scale.exp()),
            context_length=ctx,
            image_sha256=sha256_file(tmp / IMAGE_ONNX),
            text_sha256=sha256_file(tmp / TEXT_ONNX),
        )
        (tmp / ONNX_META).write_text(json.dumps(onnx_meta.to_dict(), indent=2))
    return onnx_meta


def export_untrained(dest: Path, seed: int = 0, profile: str = "tiny", overrides: tuple[str, ...] = ()) -> Path:
    """An untrained model of `profile` (plus config overrides) exported to ONNX at `dest`, its
    PyTorch artifact beside it: a servable model in seconds, for tests and benchmarks (speed
    and the serving mechanics do not depend on the weights)."""
    from clip_har.config import load_config
    from clip_har.models.artifact import save_model
    from clip_har.models.factory import build_model
    from clip_har.preprocess import PreprocessConfig

    torch.manual_seed(seed)
    cfg = load_config(profile, list(overrides))
    bundle, clf = build_model(cfg)
    pre = PreprocessConfig(bundle.image_size, bundle.mean, bundle.std)
    classes = list(cfg.data.classes)
    meta = ModelMeta(cfg.model.preset, classes, classes, list(cfg.model.templates), pre.to_dict())
    export_onnx(save_model(clf, bundle, meta, dest.with_name(dest.name + "-torch")), dest)
    return dest
