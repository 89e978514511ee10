"""prepare-data: synthesize or copy the profile's dataset into the data registry's work tree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clip_har.config import PipelineConfig
from clip_har.data.manifest import from_csv, from_folder
from clip_har.data.versioning import dataset_dir, init_registry
from clip_har.locks import file_lock
from clip_har.settings import StateDir
from clip_har.synth.generate import SynthSpec, synthesize


@dataclass
class DataRef:
    name: str
    root: str
    source: str


def synth_spec(
    cfg: PipelineConfig,
    n: int | None = None,
    seed: int | None = None,
    style: str | None = None,
    size: int | None = None,
) -> SynthSpec:
    """The profile's synthetic world, optionally another sample of it (n, seed), style or size."""
    s = cfg.data.synth
    return SynthSpec(
        n=s.n if n is None else n,
        seed=s.seed if seed is None else seed,
        size=s.size if size is None else size,
        classes=tuple(cfg.data.classes),
        priors=tuple(s.priors),
        style=s.style if style is None else style,
        splits=tuple(cfg.data.splits),  # type: ignore[arg-type]
    )


def run(cfg: PipelineConfig, state: StateDir) -> DataRef:
    d = cfg.data
    if d.source != "synth" and not d.path:
        raise ValueError(f"data.source={d.source} needs data.path")
    with file_lock(state.data_lock):  # another pipeline may be writing the same dataset
        init_registry(state.data_registry, state.dvc_remote)
        dest = dataset_dir(state.data_registry, d.name)
        if d.source == "synth":
            synthesize(dest, synth_spec(cfg))
        elif d.source == "folder":
            from_folder(Path(d.path), dest, d.splits, d.split_seed)
        else:
            from_csv(Path(d.path), dest, d.splits, d.split_seed, allow_outside=d.allow_outside)
    return DataRef(d.name, str(dest), d.source)
