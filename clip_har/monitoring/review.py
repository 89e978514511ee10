"""The review queue (active learning): uncertain predictions, and images unlike anything in the
model's reference window (novel conditions such as night photos, on which a model is often
confidently wrong), keep their image for a person to label; labelled items export as an image
folder (one sub-folder per class) for ingestion."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

PENDING, LABELLED = "pending", "labelled"


@dataclass
class ReviewItem:
    id: str
    predicted: str
    score: float
    entropy: float
    model_version: str
    ts: float
    suffix: str
    label: str | None = None
    reason: str = "uncertain"
    exported: bool = False


def entropy(probs: np.ndarray) -> float:
    """Normalised entropy in [0, 1] (1 = uniform over the classes)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    return float(-(p * np.log(p)).sum() / math.log(len(p))) if len(p) > 1 else 0.0


class ReviewQueue:
    def __init__(
        self,
        root: Path,
        max_score: float = 0.5,
        min_entropy: float = 0.6,
        max_pending: int = 10_000,
        recount_s: float = 5.0,
    ) -> None:
        self.root = Path(root)
        self.max_score, self.min_entropy, self.max_pending = max_score, min_entropy, max_pending
        self.recount_s, self._count, self._counted_at = recount_s, 0, float("-inf")

    def is_uncertain(self, probs: np.ndarray) -> bool:
        return float(np.max(probs)) < self.max_score or entropy(probs) > self.min_entropy

    def offer(
        self,
        image: bytes,
        probs: np.ndarray,
        classes: list[str],
        model_version: str,
        suffix: str = ".jpg",
        novelty: str | None = None,
    ) -> str | None:
        """Keep the image if the prediction is uncertain or `novelty` gives a reason (and the
        queue is not full); its id or None."""
        reason = "uncertain" if self.is_uncertain(probs) else novelty
        if reason is None:
            return None
        pending = self.root / PENDING
        pending.mkdir(parents=True, exist_ok=True)
        if self._pending_count(pending) >= self.max_pending:
            return None
        k = int(np.argmax(probs))
        item = ReviewItem(
            uuid.uuid4().hex[:12],
            classes[k],
            float(probs[k]),
            entropy(probs),
            model_version,
            time.time(),
            suffix,
            reason=reason,
        )
        self.image(item).write_bytes(image)
        _write_json(pending / f"{item.id}.json", asdict(item))  # last: the JSON marks the item complete
        self._count += 1
        return item.id

    def _pending_count(self, pending: Path) -> int:
        """Pending items, recounted from disk at most every few seconds (people label from other
        processes); a scan per offer would make a long queue slow down every request."""
        now = time.monotonic()
        if now - self._counted_at > self.recount_s:
            self._count, self._counted_at = sum(1 for _ in pending.glob("*.json")), now
        return self._count

    def items(self, state: str = PENDING) -> list[ReviewItem]:
        folder = self.root / state
        return (
            sorted((ReviewItem(**json.loads(p.read_text())) for p in folder.glob("*.json")), key=lambda i: i.ts)
            if folder.is_dir()
            else []
        )

    def image(self, item: ReviewItem, state: str = PENDING) -> Path:
        """Where the item's image is kept."""
        return self.root / state / f"{item.id}{item.suffix}"

    def label(self, item_id: str, label: str, classes: list[str]) -> ReviewItem:
        if label not in classes:
            raise ValueError(f"unknown label {label!r}; one of: {', '.join(classes)}")
        src = self.root / PENDING / f"{item_id}.json"
        if not src.is_file():
            raise KeyError(f"no pending review item {item_id!r}")
        item = ReviewItem(**json.loads(src.read_text()))
        item.label = label
        dest = self.root / LABELLED
        dest.mkdir(parents=True, exist_ok=True)
        shutil.move(self.image(item), self.image(item, LABELLED))
        _write_json(dest / f"{item_id}.json", asdict(item))
        src.unlink()
        return item

    def export(self, dest: Path, again: bool = False) -> int:
        """Labelled items not exported before (all with `again`) → `dest/<label>/<id><suffix>`
        (the image-folder ingest format); each is marked exported, so the next batch is new."""
        n = 0
        for item in self.items(LABELLED):
            if item.exported and not again:
                continue
            (Path(dest) / str(item.label)).mkdir(parents=True, exist_ok=True)
            shutil.copy2(self.image(item, LABELLED), Path(dest) / str(item.label) / f"{item.id}{item.suffix}")
            item.exported = True
            _write_json(self.root / LABELLED / f"{item.id}.json", asdict(item))
            n += 1
        return n


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
