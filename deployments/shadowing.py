"""The HTTP worker's side of shadow scoring: after the champion's answer, the challenger scores
the same input in the batched worker, and the comparison goes to this process's shadow log."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import aiohttp
import numpy as np
from bentoml.exceptions import ServiceUnavailable

from clip_har.serving.shadow import ShadowLog, ShadowWatch, compare
from deployments.worker import NO_SHADOW

if TYPE_CHECKING:
    from clip_har.serving.hotswap import Loaded, ModelSlot
    from clip_har.serving.predictor import Predictor


class Inferred(NamedTuple):
    probs: np.ndarray
    emb: np.ndarray
    loaded: Loaded  # the model that computed them
    extra: object  # what the request's `prepare` gave besides the pixels
    pixels: list[np.ndarray]  # what it ran on (shadow scoring reuses them)


Pixels = Callable[["Predictor"], list[np.ndarray]]  # the request's input as another model's pixels


class ShadowScorer:
    """`rows`: the batched worker's shadow_infer. At most `limit` scorings at once: past that a
    request is logged as skipped, so under load the shadow sheds first, never an answer."""

    def __init__(
        self, slot: ModelSlot, rows: Callable[[list[np.ndarray]], Awaitable[list[np.ndarray]]], folder: Path, limit: int
    ) -> None:
        self.slot, self.rows, self.limit = slot, rows, limit
        self.watch, self.log = ShadowWatch(folder), ShadowLog(folder)
        self._tasks: set[asyncio.Task] = set()

    def challenger(self, served: str) -> str | None:
        """The model scoring in shadow beside `served`, if any."""
        challenger = self.watch.current().challenger
        return challenger if challenger != served else None

    async def keep(self, upload: Path) -> Path | None:
        """A name for an uploaded file that outlives the request (BentoML deletes uploads when it
        answers): a hard link, no copy, where the file system allows; removed after scoring.
        None when it cannot be kept (the request is then not shadow-scored, and answers as ever)."""

        def link() -> Path:
            folder = Path(tempfile.mkdtemp(prefix="clip-har-shadow-"))
            kept = folder / Path(upload).name
            try:
                try:
                    os.link(upload, kept)
                except OSError:  # another file system
                    shutil.copyfile(upload, kept)
            except OSError:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            return kept

        try:
            return await asyncio.to_thread(link)
        except OSError as exc:
            why = f"upload not kept: {exc}"[:300]
            self.log.append({"challenger": self.watch.current().challenger, "status": "skipped", "why": why})
            return None

    def after(self, route: str, request_id: str, done: Inferred, again: Pixels, kept: tuple[Path, ...] = ()) -> None:
        """Score what the champion just answered, in the background (if a challenger shadows):
        it never changes an answer. It does cost time: the challenger runs in the batched worker
        beside the champion (bench/shadow.py measures it), which is why at most `limit` scorings
        run at once and the rest are skipped. `again`: the
        request's input as a model's pixels, for a challenger of another input size (from the
        request's bytes, or from files `kept`)."""
        challenger = self.challenger(done.loaded.tag)
        if challenger is None:
            _remove(kept)
            return
        record = {"request_id": request_id, "route": route, "champion": done.loaded.tag, "challenger": challenger}
        if len(self._tasks) >= self.limit:
            self.log.append({**record, "status": "skipped", "why": "busy"})
            _remove(kept)
            return
        task = asyncio.create_task(self._score(record, again, done))
        self._tasks.add(task)  # a reference until it ends (the loop keeps weak ones only)
        task.add_done_callback(lambda t: (self._tasks.discard(t), _remove(kept)))

    async def _score(self, record: dict, again: Pixels, done: Inferred) -> None:
        from clip_har.serving.hotswap import generations, split_results

        start = time.perf_counter()
        try:
            challenger = await asyncio.to_thread(self.slot.prepare, record["challenger"])
            mine, theirs = challenger.predictor.preprocess, done.loaded.predictor.preprocess
            # uint8 pixels, normalised per model: the same if they are sized the same way
            same = (mine.image_size, mine.interpolation) == (theirs.image_size, theirs.interpolation)
            pixels = done.pixels if same else await asyncio.to_thread(again, challenger.predictor)
            rows = await self.rows(pixels)
            if generations(rows) != {challenger.generation} or any(len(row) == 1 for row in rows):
                why = "no challenger" if generations(rows) == {int(NO_SHADOW)} else "the challenger changed"
                self.log.append({**record, "status": "skipped", "why": why})
                return
            probs, _, _ = await asyncio.to_thread(split_results, np.stack(rows), self.slot)
            scores = compare(done.probs, done.loaded.classes, probs, challenger.classes)
            ms = round((time.perf_counter() - start) * 1e3, 2)
            self.log.append({**record, "status": "scored", **scores, "shadow_ms": ms})
        except (ServiceUnavailable, TimeoutError, aiohttp.ClientError) as exc:  # load, not the challenger
            self.log.append({**record, "status": "skipped", "why": f"busy: {type(exc).__name__}: {exc}"[:300]})
        except Exception as exc:  # the shadow never fails anything: it is logged, and that is all
            self.log.append({**record, "status": "error", "why": f"{type(exc).__name__}: {exc}"[:300]})


def _remove(kept: tuple[Path, ...]) -> None:
    for path in kept:
        shutil.rmtree(Path(path).parent, ignore_errors=True)
