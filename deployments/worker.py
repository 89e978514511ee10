"""The service's batched inference worker: callers' images merged into one ONNX Runtime run,
for the champion and (when one is shadowing) the challenger. One worker process on purpose: it
is the single place that decides which model answers and which one scores in shadow."""

from __future__ import annotations

import asyncio
import logging

import bentoml
import numpy as np
from bentoml.exceptions import InvalidArgument

from clip_har.serving.shadow import read_current, write_current
from clip_har.settings import load_settings
from deployments.store import model_slot

SETTINGS = load_settings()  # read once per process: every process of the service sees the same environment
MODEL_TAG = SETTINGS.serving_model
SHADOW_DIR = SETTINGS.state.rollout / "shadow"
NO_SHADOW = -1.0  # the generation of a shadow row when no challenger is loaded: callers skip it
log = logging.getLogger(__name__)


@bentoml.service(name="clip-har-model", workers=1, traffic={"timeout": 120})
class HarModel:
    def __init__(self) -> None:
        from clip_har.serving.hotswap import Loaded

        self.slot = model_slot(SETTINGS, MODEL_TAG, warm=True)
        self.shadow: Loaded | None = None
        challenger = read_current(SHADOW_DIR).challenger  # a restart keeps shadowing
        if challenger and challenger != self.slot.current.tag:
            try:
                self.shadow = self.slot.prepare(challenger)
            except (ValueError, LookupError, bentoml.exceptions.BentoMLException) as exc:
                log.warning("challenger %s does not load (%s): shadowing stopped", challenger, exc)
                write_current(SHADOW_DIR, None)

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=SETTINGS.max_latency_ms)
    def infer(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        """One uint8 [3,S,S] array per image → one row per image (hotswap.run_items): images
        prepared for another model's input are answered stale, so callers prepare them again."""
        from clip_har.serving.hotswap import run_items

        return run_items(self.slot.current, batch)  # one read: the whole batch runs on one model

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=SETTINGS.max_latency_ms)
    def shadow_infer(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        """The challenger's rows for the same kind of input (its generation names it; NO_SHADOW
        rows when none shadows any more)."""
        from clip_har.serving.hotswap import run_items

        shadow = self.shadow
        return run_items(shadow, batch) if shadow is not None else [np.array([NO_SHADOW])] * len(batch)

    # All async: BentoML runs sync endpoints, the batched ones included, on one thread here, so a
    # load in `switch` would stop inference for its whole length, and `serving` would queue
    # behind the batch in progress.
    @bentoml.api
    async def switch(self, tag: str) -> dict:
        """Load, warm and then serve `tag` (off the loop: batches keep running meanwhile); in-flight
        batches finish on the previous model. A switch ends shadowing: the challenger was compared
        with the model served until now (its promotion, a rollback, or another model promoted)."""
        try:
            loaded, previous = await asyncio.to_thread(self.slot.switch, tag)
        except ValueError as exc:  # the model does not load or run: keep serving the current one
            raise InvalidArgument(str(exc)) from exc
        if self.shadow is not None and loaded.tag != (previous.tag if previous else None):
            self.shadow = None
            await asyncio.to_thread(write_current, SHADOW_DIR, None)
        return {"model_version": loaded.tag, "previous": previous.tag if previous else None}

    @bentoml.api
    async def set_shadow(self, tag: str) -> dict:
        """Score `tag` in shadow from now on (loaded and warmed first); "" stops shadowing."""
        loaded = None
        if tag:
            try:
                loaded = await asyncio.to_thread(self.slot.prepare, tag)
            except ValueError as exc:
                raise InvalidArgument(str(exc)) from exc
            if loaded.tag == self.slot.current.tag:
                raise InvalidArgument(f"{loaded.tag} is the served model: a challenger must be another one")
        self.shadow = loaded
        shadowing = await asyncio.to_thread(write_current, SHADOW_DIR, loaded.tag if loaded else None)
        return {"challenger": shadowing.challenger, "champion": self.slot.current.tag, "since": shadowing.since}

    @bentoml.api
    async def serving(self) -> str:
        return self.slot.current.tag
