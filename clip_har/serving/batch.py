"""Batch inference over a folder, a CSV of paths, or videos → rows of predictions.

Unreadable files become rows with an `error`, never a failed run.
"""

from __future__ import annotations

import csv
import json
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from clip_har.data.manifest import IMAGE_SUFFIXES
from clip_har.serving.predictor import Predictor

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}
# batch-inference defaults (the flow, its deployment and `clip-har predict`); batch size 0: by the
# backend, large on a GPU (which a small batch leaves idle), CPU-cache sized on a CPU
BATCH_SIZE, TOP_K, VIDEO_FPS = 0, 3, 1.0
CPU_BATCH, GPU_BATCH = 32, 256
MAX_VIDEO_FRAMES = 10_000  # per video; predicted in batches, so memory does not grow with it
# image-decoding threads (PIL releases the GIL while it decodes and resizes, numpy while it normalises)
DECODE_WORKERS = min(8, os.cpu_count() or 1)


@dataclass
class Row:
    path: str
    frame_s: float | None = None
    label: str | None = None
    score: float | None = None
    top_k: str | None = None  # "label:score;…"
    error: str | None = None


def collect(inputs: Iterable[Path]) -> list[Path]:
    """Expand folders (recursively) and CSVs (a `path` column, relative to the CSV) into files."""
    files: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
        elif p.suffix.lower() == ".csv":
            with p.open(newline="") as f:
                reader = csv.DictReader(f)
                if not reader.fieldnames or "path" not in reader.fieldnames:
                    raise ValueError(f"{p}: a CSV input needs a 'path' column")
                files += [
                    (p.parent / r["path"]) if not Path(r["path"]).is_absolute() else Path(r["path"]) for r in reader
                ]
        else:
            files.append(p)
    return files


def _top(pred, k: int) -> str:
    return ";".join(f"{lab}:{s:.4f}" for lab, s in pred.top_k[:k])


def default_batch_size(predictor: Predictor) -> int:
    return GPU_BATCH if predictor.on_gpu else CPU_BATCH


def predict_files(
    predictor: Predictor,
    files: list[Path],
    batch_size: int = BATCH_SIZE,
    top_k: int = TOP_K,
    video_fps: float = VIDEO_FPS,
    progress: Callable[[int], None] | None = None,
    workers: int = DECODE_WORKERS,
) -> list[Row]:
    """Rows in input order: one per image, one per sampled frame of a video (in time order),
    and one with the error for a file that cannot be read or decoded. Images are decoded by
    `workers` threads while the previous batch is predicted; the batches are the ones a sequential
    pass makes (consecutive images in input order), so the rows do not depend on `workers`."""
    batch_size = batch_size or default_batch_size(predictor)
    rows: list[list[Row]] = [[] for _ in files]  # per file, in input order: images wait for their batch
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if pending:
            preds = predictor.predict(np.stack([a for _, a in pending]), top_k)
            for (i, _), r in zip(pending, preds, strict=True):
                rows[i] = [Row(str(files[i]), None, r.label, r.score, _top(r, top_k))]
            pending.clear()

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="decode") as pool:
        for i, decoded in _decoded_in_order(pool, predictor, files, ahead=batch_size):
            f = files[i]
            try:
                if decoded is None:  # a video: decoded where it is predicted, frame batch by frame batch
                    rows[i] = _video_rows(predictor, f, video_fps, top_k, batch_size)
                elif isinstance(decoded, str):
                    rows[i] = [Row(str(f), error=decoded)]
                else:
                    pending.append((i, decoded))
            except (OSError, ValueError) as exc:
                rows[i] = [Row(str(f), error=str(exc) or type(exc).__name__)]
            if len(pending) >= batch_size:
                flush()
            if progress:
                progress(1)
        flush()
    return [row for file_rows in rows for row in file_rows]


def _decode(predictor: Predictor, path: Path) -> np.ndarray | str:
    """An image's model input, or the reason it has none (its row's error)."""
    try:
        return predictor.decode(path.read_bytes())
    except (OSError, ValueError) as exc:
        return str(exc) or type(exc).__name__


def _decoded_in_order(
    pool: ThreadPoolExecutor, predictor: Predictor, files: list[Path], ahead: int
) -> Iterator[tuple[int, np.ndarray | str | None]]:
    """(index, decoded image | its error | None for a video) in input order, the pool decoding at
    most `ahead` files beyond the one consumed: memory stays bounded whatever the input's size."""
    queued: deque[tuple[int, Future | None]] = deque()
    todo = iter(range(len(files)))

    def queue_next() -> None:
        i = next(todo, None)
        if i is not None:
            video = files[i].suffix.lower() in VIDEO_SUFFIXES
            queued.append((i, None if video else pool.submit(_decode, predictor, files[i])))

    for _ in range(max(1, ahead)):
        queue_next()
    while queued:
        i, future = queued.popleft()
        queue_next()
        yield i, None if future is None else future.result()


def _video_rows(predictor: Predictor, path: Path, fps: float, top_k: int, batch_size: int) -> list[Row]:
    """A video's frames predicted `batch_size` at a time, as they are decoded (uint8 model pixels)."""
    from contextlib import closing
    from functools import partial

    from clip_har.preprocess import to_pixels
    from clip_har.serving.video import iter_frames

    rows: list[Row] = []
    chunk: list[tuple[float, np.ndarray]] = []

    def flush() -> None:
        preds = predictor.predict(np.stack([px for _, px in chunk]), top_k)
        rows.extend(Row(str(path), t, r.label, r.score, _top(r, top_k)) for (t, _), r in zip(chunk, preds, strict=True))
        chunk.clear()

    pixels = partial(to_pixels, cfg=predictor.preprocess)
    with closing(iter_frames(path, fps, MAX_VIDEO_FRAMES, pixels, predictor.max_pixels)) as frames:
        for frame in frames:  # closing: the container is released even if a prediction fails
            chunk.append(frame)
            if len(chunk) >= batch_size:
                flush()
    if chunk:
        flush()
    return rows


def write_rows(rows: list[Row], out: Path) -> Path:
    """CSV or JSON by suffix, written atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if out.suffix.lower() == ".json":
        tmp.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(Row.__dataclass_fields__))
            w.writeheader()
            w.writerows(asdict(r) for r in rows)
    tmp.replace(out)
    return out
