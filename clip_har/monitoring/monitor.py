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
    if result.status != "insufficient_data":  # check_drift saved the verdict beside the report
        verdict = str(html.with_suffix(".json"))
        (reports_dir / CURSOR).write_text(
            json.dumps({"since": since, "until": until, "status": result.status, "verdict": verdict})
        )
    return result, Window(since, until, skipped)


def last_verdict(reports_dir: Path) -> dict | None:
    """The last check's window, status and (when it reached a verdict) its scores."""
    cursor = Path(reports_dir) / CURSOR
    if not cursor.is_file():
        return None
    state = json.loads(cursor.read_text())
    verdict = Path(state.get("verdict", ""))
    return {**state, **json.loads(verdict.read_text())} if verdict.is_file() else state


def start_window(reports_dir: Path, at: float | None = None) -> float:
    """Begin the next window at `at` (default now): predictions logged before it are not checked.
    For a deliberate fresh start (a demo measuring its own traffic, a known incident)."""
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    at = float(at if at is not None else time.time())
    (reports_dir / CURSOR).write_text(json.dumps({"since": at, "until": at, "status": "started"}))
    return at
