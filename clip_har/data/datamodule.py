"""Torch datasets over a manifest and the Lightning DataModule that serves its splits."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from clip_har.data.manifest import read_manifest
from clip_har.preprocess import PreprocessConfig, normalize, pixels

# Batches each DataLoader worker keeps ready: decoding jitter must not leave a GPU waiting.
PREFETCH_FACTOR = 4


class ManifestDataset(Dataset):
    """(image tensor, label index) for one split; optionally decoded once into memory, as uint8
    (a quarter of the float32 bytes).

    `raw`: uint8 [3, S, S] pixels, neither normalised nor mirrored: the training module does both
    on the device, so batches are collated, pinned and copied at a quarter of the size. Otherwise
    float32, normalised, and mirrored at random when `train` (what evaluation expects)."""

    def __init__(
        self,
        root: Path,
        paths: Sequence[str],
        labels: Sequence[int],
        pre: PreprocessConfig,
        cache: bool,
        train: bool,
        raw: bool = False,
    ) -> None:
        self.root, self.paths, self.labels, self.pre, self.train = Path(root), list(paths), list(labels), pre, train
        self.raw = raw
        self._cache: torch.Tensor | None = None
        if cache and self.paths:
            self._cache = torch.from_numpy(np.stack([pixels(self.root / p, pre) for p in self.paths]))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        px = (
            self._cache[i] if self._cache is not None else torch.from_numpy(pixels(self.root / self.paths[i], self.pre))
        )
        if self.raw:
            return px, self.labels[i]
        x = torch.from_numpy(normalize(px.numpy(), self.pre))
        if self.train and torch.rand(()) < 0.5:  # mirror images are the same action
            x = x.flip(-1)
        return x, self.labels[i]


def split_dataset(
    root: Path,
    split: str,
    classes: Sequence[str],
    pre: PreprocessConfig,
    cache: bool = True,
    train: bool = False,
    raw: bool = False,
) -> ManifestDataset:
    df = read_manifest(root)
    df = df[df["split"] == split]
    index = {c: i for i, c in enumerate(classes)}
    return ManifestDataset(root, df["path"].tolist(), [index[c] for c in df["label"]], pre, cache, train, raw)


def loader_kwargs(num_workers: int, pin_memory: bool) -> dict[str, Any]:
    """DataLoader settings: pinned batches let Lightning copy them to a GPU without blocking;
    workers decode and collate the next batches while the current step runs, and stay alive
    between epochs (starting them again each epoch would idle the GPU)."""
    kwargs: dict[str, Any] = {"num_workers": num_workers, "pin_memory": pin_memory}
    if num_workers > 0:
        kwargs |= {"persistent_workers": True, "prefetch_factor": PREFETCH_FACTOR}
    return kwargs


class HARDataModule(L.LightningDataModule):
    """uint8 batches (`raw` datasets); `HARModule.on_after_batch_transfer` normalises and flips."""

    def __init__(
        self,
        root: Path,
        classes: Sequence[str],
        pre: PreprocessConfig,
        batch_size: int = 64,
        num_workers: int = 0,
        cache: bool = True,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.root, self.classes, self.pre = Path(root), list(classes), pre
        self.batch_size, self.num_workers, self.cache, self.pin_memory = batch_size, num_workers, cache, pin_memory
        self.splits: dict[str, ManifestDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val", "test"):
            if split not in self.splits:
                self.splits[split] = split_dataset(
                    self.root, split, self.classes, self.pre, self.cache, split == "train", raw=True
                )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.splits[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            **loader_kwargs(self.num_workers, self.pin_memory),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)
