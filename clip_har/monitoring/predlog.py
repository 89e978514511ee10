"""The prediction log: an append-only store of served predictions (hourly Parquet parts).

Writes happen on a background thread, off the request path, in batches; memory is bounded by
the queue size; `close()` drains the queue, so a graceful shutdown loses nothing. A failed write
(full or read-only folder) is logged and retried, never the end of the writer. Readers skip
(and report) empty or corrupt parts instead of failing.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageStat

PART_GLOB = "*/*/part-*.parquet"
log = logging.getLogger(__name__)


@dataclass
class PredictionRecord:
    request_id: str
    model_version: str
    label: str
    score: float
    embedding: list[float]
    brightness: float
    contrast: float
    width: int
    height: int
    endpoint: str = "predict"
    ts: float = field(default_factory=time.time)


def image_stats(im: Image.Image) -> dict[str, float]:
    """Cheap per-image statistics for drift checks: brightness, contrast (grey levels), size."""
    stat = ImageStat.Stat(im.convert("L"))
    return {
        "brightness": float(stat.mean[0]),
        "contrast": float(stat.stddev[0]),
        "width": im.width,
        "height": im.height,
    }


class PredictionLog:
    def __init__(self, root: Path, flush_rows: int = 512, flush_seconds: float = 5.0, max_queue: int = 20_000) -> None:
        self.root = Path(root)
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self._q: queue.Queue[PredictionRecord | None] = queue.Queue(maxsize=max_queue)
        self.dropped = 0  # records refused because the writer fell behind (bounded memory)
        self.written = 0
        self.write_errors = 0  # failed part writes; their rows are kept and retried
        self._retry_at, self._backoff = 0.0, 0.0
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def append(self, record: PredictionRecord) -> bool:
        """Never blocks the caller; False if the queue is full (the record is counted as dropped)."""
        try:
            self._q.put_nowait(record)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def close(self, timeout: float = 30.0) -> None:
        """Drain and write everything queued, then stop the writer. Returns within about
        `timeout` even if the writer is stuck (what it has not written is then lost, logged)."""
        deadline = time.monotonic() + timeout
        try:
            self._q.put(None, timeout=timeout)
        except queue.Full:
            log.error("prediction log %s: writer stuck; %d queued records not written", self.root, self._q.qsize())
            return
        self._thread.join(max(deadline - time.monotonic(), 0.0))
        if self._thread.is_alive():
            log.error(
                "prediction log %s: writer still busy after %.0fs; queued records may be lost", self.root, timeout
            )

    def _run(self) -> None:
        buf: list[PredictionRecord] = []
        last = time.monotonic()
        while True:
            try:
                item = self._q.get(timeout=0.2)
            except queue.Empty:
                item = ...
            if item is None:
                if lost := self._flush(buf):
                    log.error("prediction log %s: %d records not written at close", self.root, len(lost))
                return
            if item is not ...:
                buf.append(item)
            if buf and (len(buf) >= self.flush_rows or time.monotonic() - last >= self.flush_seconds):
                if time.monotonic() >= self._retry_at:
                    buf, last = self._flush(buf), time.monotonic()

    def _flush(self, rows: list[PredictionRecord]) -> list[PredictionRecord]:
        """Write `rows`. An I/O error (full or read-only folder) keeps them, the newest within the
        queue's bound, and backs off (flush_seconds, doubling to 5 min) before the next try; any
        other error means the rows cannot be written at all: dropped, logged. Returns what is left."""
        if not rows:
            return []
        try:
            self._write(rows)
        except OSError as exc:
            self.write_errors += 1
            if not self._backoff:  # log the fault once, not at every retry
                log.warning("prediction log %s: write failed (%s); keeping rows and retrying", self.root, exc)
            self._backoff = min(max(self._backoff * 2, self.flush_seconds), 300.0)
            self._retry_at = time.monotonic() + self._backoff
            excess = max(len(rows) - self._q.maxsize, 0)
            self.dropped += excess
            return rows[excess:]
        except Exception as exc:  # not the disk: retrying cannot help, and the writer must live on
            self.write_errors += 1
            self.dropped += len(rows)
            log.error("prediction log %s: %d rows cannot be written (%s); dropped", self.root, len(rows), exc)
            return []
        if self._backoff:
            log.warning("prediction log %s: writing again", self.root)
        self._backoff = 0.0
        return []

    def _write(self, rows: list[PredictionRecord]) -> None:
        if not rows:
            return
        df = pd.DataFrame([asdict(r) for r in rows])
        hour = datetime.fromtimestamp(rows[0].ts, tz=UTC)
        part_dir = self.root / hour.strftime("%Y-%m-%d") / hour.strftime("%H")
        part_dir.mkdir(parents=True, exist_ok=True)
        path = part_dir / f"part-{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = path.with_suffix(".tmp")
        try:
            df.to_parquet(tmp, index=False)
            os.replace(tmp, path)  # readers never see half a part
        except BaseException:
            tmp.unlink(missing_ok=True)  # a half-written part would hold space a retry needs
            raise
        self.written += len(rows)


class NullLog:
    """Accepts and forgets records (logging switched off)."""

    dropped = written = 0

    def append(self, record: PredictionRecord) -> bool:
        return True

    def close(self, timeout: float = 0.0) -> None:
        return None


def read_log(root: Path, since: float | None = None, until: float | None = None) -> tuple[pd.DataFrame, list[str]]:
    """All records with since <= ts < until, and a list of parts skipped with the reason."""
    frames, skipped = [], []
    for part in sorted(Path(root).glob(PART_GLOB)):
        try:
            df = pd.read_parquet(part)
        except Exception as exc:  # any unreadable part is reported, never fatal
            skipped.append(f"{part}: unreadable ({type(exc).__name__})")
            continue
        if df.empty or "ts" not in df:
            skipped.append(f"{part}: empty")
            continue
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=list(PredictionRecord.__dataclass_fields__)), skipped
    out = pd.concat(frames, ignore_index=True)
    if since is not None:
        out = out[out["ts"] >= since]
    if until is not None:
        out = out[out["ts"] < until]
    return out.sort_values("ts", ignore_index=True), skipped


def embeddings_matrix(df: pd.DataFrame) -> np.ndarray:
    return np.stack(df["embedding"].to_numpy()) if len(df) else np.zeros((0, 0), np.float32)
