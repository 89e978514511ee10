"""One drift-monitor step as a library call: the prediction-log window since the last check
against the champion's reference window; remembers where it stopped."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from clip_har.monitoring.drift import DriftConfig, DriftResult, check_drift
from clip_har.monitoring.predlog import read_log
from clip_har.monitoring.reference import REFERENCE

CURSOR = "drift_cursor.json"


@dataclass
class Window:
    since: float
    until: float
    skipped_parts: list[str]


def window_bounds(reports_dir: Path, now: float | None = None) -> tuple[float, float]:
    """[last check's end, now): every logged prediction is looked at exactly once."""
    cursor = Path(reports_dir) / CURSOR
    since = json.loads(cursor.read_text())["until"] if cursor.is_file() else 0.0
    return float(since), float(now if now is not None else time.time())


def run_check(
    log_root: Path, onnx_dir: Path, reports_dir: Path, cfg: DriftConfig | None = None, now: float | None = None
) -> tuple[DriftResult, Window]:
    """Check the window; advance the cursor only when a verdict was reached (so windows with
    too few predictions accumulate into the next check instead of being lost)."""
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    since, until = window_bounds(reports_dir, now)
    current, skipped = read_log(Path(log_root), since=since, until=until)
    reference_path = Path(onnx_dir) / REFERENCE
    if not reference_path.is_file():
        raise FileNotFoundError(f"the champion has no reference window ({reference_path})")
    reference = pd.read_parquet(reference_path)
    html = reports_dir / f"drift-{int(until)}.html"
    result = check_drift(reference, current, cfg, html=html)
    if result.status != "insufficient_data":
        (reports_dir / CURSOR).write_text(json.dumps({"since": since, "until": until, "status": result.status}))
    return result, Window(since, until, skipped)
