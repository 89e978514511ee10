"""Write a synthetic action dataset (images + manifest) deterministically from a seed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from clip_har.classes import HAR_CLASSES
from clip_har.config import DEFAULT_SPLITS
from clip_har.data.manifest import MANIFEST, describe_files, staged_dir, stratified_split, write_manifest
from clip_har.synth.scene import BACKGROUNDS, Shift, render_scene

PARAMS_FILE = "synth.json"
# Bump when the renderer changes what a seed produces, so cached datasets are not reused stale.
GENERATOR_VERSION = 2


@dataclass(frozen=True)
class SynthSpec:
    """A sample of the synthetic world; the profile's `data.synth` says which (see `synth_spec`)."""

    n: int
    seed: int
    size: int  # stored image size; the model's preprocessing resizes
    classes: tuple[str, ...] = HAR_CLASSES
    priors: tuple[float, ...] = ()  # empty = uniform; otherwise one weight per class (drift knob)
    style: str = "day"
    backgrounds: tuple[str, ...] = BACKGROUNDS
    splits: tuple[float, float, float] = DEFAULT_SPLITS
    extra: dict[str, str] = field(default_factory=dict)  # free tags recorded with the data

    def as_json(self) -> str:
        return json.dumps({**asdict(self), "generator_version": GENERATOR_VERSION}, sort_keys=True)


def class_counts(n: int, classes: Sequence[str], priors: Sequence[float]) -> dict[str, int]:
    """Exact per-class counts by largest remainder, so small sets stay stratified."""
    w = np.asarray(priors if priors else [1.0] * len(classes), dtype=float)
    if len(w) != len(classes) or (w < 0).any() or w.sum() <= 0:
        raise ValueError("priors must be one non-negative weight per class with a positive sum")
    raw = n * w / w.sum()
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts))[: n - counts.sum()]:
        counts[i] += 1
    return {c: int(k) for c, k in zip(classes, counts, strict=True)}


def synthesize(dest: Path, spec: SynthSpec) -> Path:
    """Render `spec.n` scenes into a fresh data root at `dest`; reuse it if the spec matches."""
    dest = Path(dest)
    if spec.n < 1:
        raise ValueError("n must be at least 1")
    if (dest / PARAMS_FILE).is_file() and (dest / MANIFEST).is_file():
        if (dest / PARAMS_FILE).read_text() == spec.as_json():
            return dest
    counts = class_counts(spec.n, spec.classes, spec.priors)
    labels = [c for c, k in counts.items() for _ in range(k)]
    order = np.random.default_rng(spec.seed).permutation(len(labels))
    shift = Shift(style=spec.style, backgrounds=tuple(spec.backgrounds))
    with staged_dir(dest) as root:
        rows = []
        for i, li in enumerate(order):
            label = labels[li]
            scene = render_scene(label, np.random.default_rng([spec.seed, i]), spec.size, shift)
            rel = f"images/{label}/{i:06d}.jpg"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            with open(root / rel, "wb") as f:
                f.write(scene.raw_jpeg)
            rows.append({"path": rel, "label": label, "caption": scene.caption, "source": f"synth:seed={spec.seed}"})
        df: pd.DataFrame = describe_files(root, rows)
        df["split"] = stratified_split(df["label"].tolist(), spec.splits, spec.seed)
        write_manifest(df, root)
        (root / PARAMS_FILE).write_text(spec.as_json())
    return dest
