"""The served model, switchable while requests are in flight.

A switch builds and warms the new predictor *before* it becomes current, so a request never
meets a half-loaded model, and a model that fails to load or run leaves the current one serving.
Every inference result carries the generation id of the model that computed it; results that
finish after a switch are still read with their own model's labels and text tower.

Processes that prepare pixels (the service's HTTP workers) and the process that runs the image
graph (its batched worker) switch at different moments, and models differ in input size. So the
pixels travel as one array per image, the runner computes only those shaped for the model it
serves, and answers the others with a *stale* row naming that model: the caller prepares the
pixels again for it and follows it. Switches are serialised, so every process converges on the
last model switched to.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clip_har.monitoring.novelty import Novelty

if TYPE_CHECKING:  # the predictor pulls in ONNX Runtime; the service imports this module early
    from clip_har.serving.predictor import Predictor

# 48 bits: exact in a float64 column, and collisions among a registry's models are negligible.
_GEN_BITS = 48


def generation_id(tag: str) -> int:
    """A stable integer for a model tag, small enough to ride in a float64 output column."""
    return int.from_bytes(hashlib.sha256(tag.encode()).digest()[:8], "big") >> (64 - _GEN_BITS)


@dataclass(frozen=True)
class Loaded:
    tag: str
    path: Path
    predictor: Predictor

    @property
    def generation(self) -> int:
        return generation_id(self.tag)

    @property
    def classes(self) -> list[str]:
        return self.predictor.classes

    @cached_property
    def novelty(self) -> Novelty | None:
        """What counts as new conditions for this model (from its reference window), if it has one."""
        import pandas as pd

        from clip_har.monitoring.reference import REFERENCE

        ref = self.path / REFERENCE
        return Novelty.from_reference(pd.read_parquet(ref)) if ref.is_file() else None


Resolver = Callable[[str], tuple[str, Path]]  # tag such as "clip-har:latest" → (exact tag, directory)
Finder = Callable[[int], str | None]  # generation id → exact tag, for results of a model loaded elsewhere


class ModelSlot:
    """Holds the current model plus the last `keep` ones, by generation id."""

    def __init__(
        self,
        resolve: Resolver,
        factory: Callable[[Path], Predictor],
        find: Finder | None = None,
        keep: int = 3,
        warm: bool = True,
    ) -> None:
        """`warm=False` for a process that never runs the image side (the service's entry).
        `keep` >= 2: the model being served and the one being switched to."""
        if keep < 2:
            raise ValueError("a model slot keeps at least 2 models (the served one and the next)")
        self._resolve, self._factory, self._find, self._keep, self._warm = resolve, factory, find, keep, warm
        self._models: OrderedDict[int, Loaded] = OrderedDict()
        self._current: Loaded | None = None
        self._lock = threading.Lock()  # one load at a time; readers never take it
        self._switching = threading.Lock()  # one switch at a time: the last one asked for wins

    @property
    def current(self) -> Loaded:
        if self._current is None:
            raise RuntimeError("no model loaded yet")
        return self._current

    def prepare(self, tag: str) -> Loaded:
        """Resolve, load and warm a model without serving it. A model that does not load or run
        is a ValueError naming why; nothing changes then."""
        exact, path = self._resolve(tag)
        with self._lock:
            known = self._models.get(generation_id(exact))
            if known is not None:
                return known
            try:
                loaded = Loaded(exact, path, self._factory(path))
                if self._warm:
                    _warm_up(loaded.predictor)
            except Exception as exc:  # ORT, PyTorch and file errors alike
                raise ValueError(f"model {exact!r} cannot be served: {exc}") from exc
            self._models[loaded.generation] = loaded
            while len(self._models) > self._keep:
                oldest = next(iter(self._models))
                if self._current is not None and oldest == self._current.generation:
                    self._models.move_to_end(oldest)  # never drop the model being served
                    continue
                self._models.popitem(last=False)
            return loaded

    def activate(self, loaded: Loaded) -> Loaded | None:
        """Serve `loaded` from the next request on (one reference swap); returns the previous."""
        previous, self._current = self._current, loaded
        return previous

    def switch(self, tag: str) -> tuple[Loaded, Loaded | None]:
        """Prepare and activate `tag`; concurrent switches happen one after the other, so the
        previous model each one reports is the one it really replaced."""
        with self._switching:
            loaded = self.prepare(tag)
            return loaded, self.activate(loaded)

    def has(self, generation: int) -> bool:
        return generation in self._models

    def get(self, generation: int) -> Loaded:
        """The model that produced a result; loads it when another process switched to it."""
        known = self._models.get(generation)
        if known is not None:
            return known
        tag = self._find(generation) if self._find else None
        if tag is None:
            raise LookupError(f"no model with generation {generation}")
        return self.prepare(tag)


def _warm_up(predictor: Predictor) -> None:
    """One tiny inference, so a broken model fails the switch instead of the first request."""
    size = predictor.preprocess.image_size
    probs, emb = predictor.run(np.zeros((1, 3, size, size), np.float32))
    if probs.shape != (1, len(predictor.classes)) or not np.isfinite(emb).all():
        raise ValueError(f"model warm-up gave probabilities {probs.shape} for {len(predictor.classes)} classes")


def tag_results(probs: np.ndarray, emb: np.ndarray, loaded: Loaded) -> np.ndarray:
    """[N, C + D + 1] float64: probabilities, embeddings and the generation id (last column)."""
    gen = np.full((len(probs), 1), float(loaded.generation))
    return np.concatenate([probs.astype(np.float64), emb.astype(np.float64), gen], axis=1)


def split_results(out: np.ndarray, slot: ModelSlot) -> tuple[np.ndarray, np.ndarray, Loaded]:
    """Inverse of `tag_results`, with the model that computed them (one model per batch)."""
    loaded = slot.get(int(out[0, -1]))
    c = len(loaded.classes)
    return out[:, :c].astype(np.float32), out[:, c:-1].astype(np.float32), loaded


def input_shape(loaded: Loaded) -> tuple[int, int, int]:
    """The shape of one image's pixels for this model: [3, S, S]."""
    size = loaded.predictor.preprocess.image_size
    return (3, size, size)


def run_items(loaded: Loaded, items: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The runner's side: one row per image. Pixels shaped for `loaded` run in one batch and
    give `tag_results` rows; pixels prepared for another model give a stale row, [generation]
    alone, which names the model to prepare them for instead of failing the whole batch."""
    shape = input_shape(loaded)
    fits = [i for i, x in enumerate(items) if x.shape == shape]
    rows = [np.array([float(loaded.generation)])] * len(items)
    if fits:
        computed = tag_results(*loaded.predictor.run(np.stack([items[i] for i in fits])), loaded)
        for i, row in zip(fits, computed, strict=True):
            rows[i] = row
    return rows


def generations(rows: Sequence[np.ndarray]) -> set[int]:
    """The models that answered these rows (stale rows name the model that refused them)."""
    return {int(row[-1]) for row in rows}


def read_rows(rows: Sequence[np.ndarray], slot: ModelSlot) -> tuple[np.ndarray, np.ndarray, Loaded] | None:
    """(probabilities, embeddings, model) when one model computed every row, else None: some
    pixels were prepared for a model no longer served, or a switch fell between the batches a
    long request was split into. The caller prepares them again for the served model."""
    gens = generations(rows)
    if len(gens) != 1 or any(len(row) == 1 for row in rows):
        return None
    return split_results(np.stack(rows), slot)
