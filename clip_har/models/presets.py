"""Models by name: project presets (JSON configs shipped here) and open_clip's own.

`tiny` is for tests, `demo` is the offline default (base weights pre-trained by the project),
anything else is an open_clip model name (e.g. ViT-B-32) with a pretrained tag or local file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import open_clip
import torch

CONFIG_DIR = Path(__file__).parent / "configs"
ALIASES = {"tiny": "clip-har-tiny", "demo": "clip-har-demo"}


@cache
def _register_project_configs() -> None:
    for path in sorted(CONFIG_DIR.glob("*.json")):
        open_clip.add_model_config(path)


def open_clip_name(preset: str) -> str:
    """Our preset name → the open_clip model name (registering project configs once)."""
    _register_project_configs()
    name = ALIASES.get(preset, preset)
    if name not in open_clip.list_models():
        known = sorted(ALIASES) + ["ViT-B-32", "ViT-B-16", "…any open_clip.list_models() name"]
        raise ValueError(f"unknown model preset {preset!r}; known: {', '.join(known)}")
    return name


class _RandomInitFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextmanager
def _quiet_random_init() -> Iterator[None]:
    """open_clip warns on every random init; ours are deliberate (base weights load next)."""
    root = logging.getLogger()
    f = _RandomInitFilter()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


@dataclass
class ClipBundle:
    model: open_clip.CLIP
    tokenizer: object
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def build_clip(preset: str, pretrained: str | None = None) -> ClipBundle:
    """Build a CLIP by preset. `pretrained` is None (random), a local weights file or a tag.

    A tag (e.g. 'openai') needs the network; a path that does not exist is an error here rather
    than open_clip's silent random init.
    """
    name = open_clip_name(preset)
    weights: str | None = None
    if pretrained:
        looks_like_path = any(ch in pretrained for ch in "/\\") or pretrained.endswith((".pt", ".bin", ".safetensors"))
        if looks_like_path and not Path(pretrained).is_file():
            raise FileNotFoundError(f"pretrained weights file {pretrained} does not exist")
        weights = pretrained
    with _quiet_random_init():
        model = open_clip.create_model(name, pretrained=weights)
    model.eval()
    size = model.visual.image_size
    size = size[0] if isinstance(size, tuple | list) else int(size)
    mean = tuple(getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = tuple(getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    return ClipBundle(model, open_clip.get_tokenizer(name), int(size), mean, std)  # type: ignore[arg-type]


def load_state(model: torch.nn.Module, path: Path) -> None:
    """Load a state dict saved by this project (plain or wrapped in {'state_dict': …})."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    model.load_state_dict(state)
