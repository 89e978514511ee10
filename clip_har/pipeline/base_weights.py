"""base-weights: the CLIP weights training starts from."""

from __future__ import annotations

import hashlib
import json

from clip_har.config import PipelineConfig
from clip_har.pipeline.prepare_data import synth_spec
from clip_har.settings import StateDir
from clip_har.synth.generate import synthesize


def run(cfg: PipelineConfig, state: StateDir) -> str | None:
    """The project's own contrastive pre-training when enabled (cached by its inputs), otherwise
    None: build_clip loads `model.pretrained` itself."""
    if not cfg.pretrain.enabled:
        return None
    import torch

    from clip_har.models.presets import build_clip
    from clip_har.models.pretrain import PretrainSpec, pretrain

    p = cfg.pretrain
    spec = synth_spec(cfg, n=p.n, seed=p.seed)
    key_src = json.dumps([cfg.model.preset, p.model_dump(), spec.as_json()], sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:12]
    out = state.cache / "base" / f"{cfg.model.preset}-{key}.pt"
    if out.is_file():
        return str(out)
    pairs = synthesize(state.cache / "pretrain-data" / key, spec)
    torch.manual_seed(p.seed)  # the random init too, so the same inputs give the same base
    bundle = build_clip(cfg.model.preset)
    pretrain(bundle, pairs, PretrainSpec(p.epochs, p.batch_size, p.lr, seed=p.seed), out)
    return str(out)
