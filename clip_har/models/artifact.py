"""The model artifact: a directory with the full CLIP weights (tuned image tower + text tower),
the head, and metadata (classes, prompts, preprocessing, lineage). Everything a consumer needs
travels here, so evaluation, export and serving never re-declare labels or image size.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from clip_har.data.manifest import staged_dir
from clip_har.models.classifier import CLIPClassifier
from clip_har.models.presets import ClipBundle, build_clip
from clip_har.preprocess import PreprocessConfig

META = "meta.json"
CLIP_WEIGHTS = "clip.pt"
HEAD_WEIGHTS = "head.pt"


@dataclass
class ModelMeta:
    preset: str
    classes: list[str]
    phrases: list[str]
    templates: list[str]
    preprocess: dict[str, object]
    lineage: dict[str, str] = field(default_factory=dict)  # data version, MLflow run, git sha…

    def preprocess_config(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.preprocess)


def save_model(model: CLIPClassifier, bundle: ClipBundle, meta: ModelMeta, dest: Path) -> Path:
    """Write the artifact atomically (a killed run leaves the old one or nothing)."""
    if model.visual is not bundle.model.visual:
        raise ValueError("classifier and CLIP bundle must share the image tower")
    with staged_dir(dest) as tmp:
        torch.save(bundle.model.state_dict(), tmp / CLIP_WEIGHTS)
        torch.save(model.head.state_dict(), tmp / HEAD_WEIGHTS)
        (tmp / META).write_text(json.dumps(asdict(meta), indent=2))
    return Path(dest)


def read_meta(path: Path) -> ModelMeta:
    return ModelMeta(**json.loads((Path(path) / META).read_text()))


def load_model(path: Path) -> tuple[CLIPClassifier, ClipBundle, ModelMeta]:
    path = Path(path)
    for name in (META, CLIP_WEIGHTS, HEAD_WEIGHTS):
        if not (path / name).is_file():
            raise FileNotFoundError(f"model artifact {path} lacks {name}")
    meta = read_meta(path)
    bundle = build_clip(meta.preset)
    bundle.model.load_state_dict(torch.load(path / CLIP_WEIGHTS, map_location="cpu", weights_only=True))
    head_state = torch.load(path / HEAD_WEIGHTS, map_location="cpu", weights_only=True)
    head = nn.Linear(head_state["weight"].shape[1], head_state["weight"].shape[0])
    head.load_state_dict(head_state)
    model = CLIPClassifier(bundle.model.visual, head).eval()
    return model, bundle, meta
