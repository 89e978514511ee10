"""Batch inference over a folder, a CSV of paths, or videos → rows of predictions.

Unreadable files become rows with an `error`, never a failed run.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from clip_har.data.manifest import IMAGE_SUFFIXES
from clip_har.serving.predictor import Predictor

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}
# batch-inference defaults (the flow, its deployment and `clip-har predict`)
BATCH_SIZE, TOP_K, VIDEO_FPS = 32, 3, 1.0
MAX_VIDEO_FRAMES = 10_000  # per video; predicted in batches, so memory does not grow with it


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


def predict_files(
    predictor: Predictor,
    files: list[Path],
    batch_size: int = BATCH_SIZE,
    top_k: int = TOP_K,
    video_fps: float = VIDEO_FPS,
    progress: Callable[[int], None] | None = None,
) -> list[Row]:
    """Rows in input order: one per image, one per sampled frame of a video (in time order),
    and one with the error for a file that cannot be read or decoded."""
    rows: list[list[Row]] = []  # per file, in input order: images wait for their batch
    pending: list[tuple[int, Path, np.ndarray]] = []

    def flush() -> None:
        if pending:
            preds = predictor.predict(np.stack([a for *_, a in pending]), top_k)
            for (i, p, _), r in zip(pending, preds, strict=True):
                rows[i] = [Row(str(p), None, r.label, r.score, _top(r, top_k))]
            pending.clear()

    for f in files:
        rows.append([])
        try:
            if f.suffix.lower() in VIDEO_SUFFIXES:
                rows[-1] = _video_rows(predictor, f, video_fps, top_k, batch_size)
            else:
                pending.append((len(rows) - 1, f, predictor.decode(f.read_bytes())))
        except (OSError, ValueError) as exc:
            rows[-1] = [Row(str(f), error=str(exc) or type(exc).__name__)]
        if len(pending) >= batch_size:
            flush()
        if progress:
            progress(1)
    flush()
    return [row for file_rows in rows for row in file_rows]


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
