"""The review queue (active learning): uncertain predictions, and images unlike anything in the
model's reference window (novel conditions such as night photos, on which a model is often
confidently wrong), keep their image for a person to label; labelled items export as an image
folder (one sub-folder per class) for ingestion."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from clip_har.data.manifest import IMAGE_SUFFIXES

PENDING, LABELLED = "pending", "labelled"
SUFFIX_OF_FORMAT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}
log = logging.getLogger(__name__)


def stored_suffix(image: bytes, hint: str) -> str:
    """The suffix an image is kept under: its real format's; else `hint` (the client's) if it is
    an image suffix; else .jpg. Never the client's word alone: `x.json` would overwrite the item's
    metadata, and ingest only takes image suffixes."""
    try:
        fmt = Image.open(io.BytesIO(image)).format  # reads the header only
    except Exception:  # any unreadable header: fall back to the hint
        fmt = None
    if fmt in SUFFIX_OF_FORMAT:
        return SUFFIX_OF_FORMAT[fmt]
    return hint.lower() if hint.lower() in IMAGE_SUFFIXES else ".jpg"


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
        max_pending_mb: float = 2_000.0,
        recount_s: float = 5.0,
    ) -> None:
        self.root = Path(root)
        self.max_score, self.min_entropy, self.max_pending = max_score, min_entropy, max_pending
        self.max_pending_bytes = int(max_pending_mb * 1e6)
        self.recount_s = recount_s
        self._usage: dict[str, tuple[int, int, float]] = {}  # folder → (items, image bytes, counted at)

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
        queue is within its item and byte budgets); its id or None. Best effort: a folder that
        cannot be written loses the item (logged), never the caller's prediction."""
        reason = "uncertain" if self.is_uncertain(probs) else novelty
        if reason is None:
            return None
        try:
            item = self._keep(image, probs, classes, model_version, stored_suffix(image, suffix), reason)
            return item.id if item else None
        except OSError as exc:
            log.warning("review queue %s: item not kept (%s)", self.root, exc)
            return None

    def feedback(
        self, image: bytes, probs: np.ndarray, classes: list[str], model_version: str, suffix: str, label: str
    ) -> ReviewItem:
        """A user says the prediction is wrong and names the right label: the image waits in the
        queue with that label as a suggestion (reason "feedback"), which a reviewer confirms
        (`clip-har review label`) before it counts as labelled data: anyone who can reach the
        service can send one, so it never goes to training unchecked. ValueError for a label the
        model does not know; OverflowError when the queue's budgets are full; OSError when the
        folder cannot be written (nothing half-written is left)."""
        if label not in classes:
            raise ValueError(f"unknown label {label!r}; one of: {', '.join(classes)}")
        item = self._keep(image, probs, classes, model_version, stored_suffix(image, suffix), "feedback", label)
        if item is None:
            raise OverflowError("the review queue is full: label or export the items waiting first")
        return item

    def _keep(
        self,
        image: bytes,
        probs: np.ndarray,
        classes: list[str],
        model_version: str,
        suffix: str,
        reason: str,
        label: str | None = None,
    ) -> ReviewItem | None:
        folder = self.root / PENDING
        folder.mkdir(parents=True, exist_ok=True)
        count, size = self._folder_usage(folder)
        if count >= self.max_pending or size + len(image) > self.max_pending_bytes:
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
            label=label,
            reason=reason,
        )
        image_path = folder / f"{item.id}{item.suffix}"
        try:
            image_path.write_bytes(image)
            _write_json(folder / f"{item.id}.json", asdict(item))  # last: the JSON marks the item complete
        except OSError:
            image_path.unlink(missing_ok=True)  # no orphan image without its metadata
            raise
        count, size, at = self._usage[folder.name]
        self._usage[folder.name] = (count + 1, size + len(image), at)
        return item

    def _folder_usage(self, folder: Path) -> tuple[int, int]:
        """Items in `folder` and their image bytes, recounted from disk at most every few seconds
        (people label from other processes); a scan per offer would slow down every request."""
        now = time.monotonic()
        count, size, at = self._usage.get(folder.name, (0, 0, float("-inf")))
        if now - at > self.recount_s:
            images = [p for p in folder.iterdir() if p.suffix not in (".json", ".tmp")]
            count, size = len(images), sum(_size(p) for p in images)
            self._usage[folder.name] = (count, size, now)
        return count, size

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


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # labelled (moved) by another process since the listing
        return 0


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
