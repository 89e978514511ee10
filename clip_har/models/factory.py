"""Config → (CLIP bundle, prompt-initialised classifier)."""

from __future__ import annotations

from pathlib import Path

from clip_har.config import PipelineConfig, phrases_for
from clip_har.models.classifier import CLIPClassifier, build_classifier
from clip_har.models.presets import ClipBundle, build_clip, load_state


def build_model(cfg: PipelineConfig, base_weights: Path | None = None) -> tuple[ClipBundle, CLIPClassifier]:
    """The base CLIP (pretrained tag/file, or the project's own base weights) and its zero-shot head."""
    bundle = build_clip(cfg.model.preset, cfg.model.pretrained)
    if base_weights is not None:
        load_state(bundle.model, Path(base_weights))
    return bundle, build_classifier(bundle, phrases_for(cfg), cfg.model.templates)
