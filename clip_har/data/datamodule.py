"""Torch datasets over a manifest and the Lightning DataModule that serves its splits."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from clip_har.data.manifest import read_manifest
from clip_har.preprocess import PreprocessConfig, preprocess


class ManifestDataset(Dataset):
    """(image tensor, label index) for one split; optionally decoded once into memory."""

    def __init__(
        self, root: Path, paths: Sequence[str], labels: Sequence[int], pre: PreprocessConfig, cache: bool, train: bool
    ) -> None:
        self.root, self.paths, self.labels, self.pre, self.train = Path(root), list(paths), list(labels), pre, train
        self._cache: torch.Tensor | None = None
        if cache and self.paths:
            self._cache = torch.from_numpy(np.stack([preprocess(self.root / p, pre) for p in self.paths]))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = (
            self._cache[i]
            if self._cache is not None
            else torch.from_numpy(preprocess(self.root / self.paths[i], self.pre))
        )
        if self.train and torch.rand(()) < 0.5:  # mirror images are the same action
            x = x.flip(-1)
        return x, self.labels[i]


def split_dataset(
    root: Path, split: str, classes: Sequence[str], pre: PreprocessConfig, cache: bool = True, train: bool = False
) -> ManifestDataset:
    df = read_manifest(root)
    df = df[df["split"] == split]
    index = {c: i for i, c in enumerate(classes)}
    return ManifestDataset(root, df["path"].tolist(), [index[c] for c in df["label"]], pre, cache, train)


class HARDataModule(L.LightningDataModule):
    def __init__(
        self,
        root: Path,
        classes: Sequence[str],
        pre: PreprocessConfig,
        batch_size: int = 64,
        num_workers: int = 0,
        cache: bool = True,
    ) -> None:
        super().__init__()
        self.root, self.classes, self.pre = Path(root), list(classes), pre
        self.batch_size, self.num_workers, self.cache = batch_size, num_workers, cache
        self.splits: dict[str, ManifestDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val", "test"):
            if split not in self.splits:
                self.splits[split] = split_dataset(
                    self.root, split, self.classes, self.pre, self.cache, split == "train"
                )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.splits[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)
