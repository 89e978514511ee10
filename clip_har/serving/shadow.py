"""Shadow scoring: a challenger scores the champion's live traffic, only the champion answers.

Which model shadows is one small file under the state dir (`current.json`): the batched worker
writes it when told (POST /admin/shadow) and reads it when it starts, so a restart keeps
shadowing; the HTTP workers read it (at most once a second) to know whether to ask for shadow
scores. Each HTTP worker appends one JSON line per request to its own log file (no two writers
share a file); `summarize` reads them all: how often the two models agree and how confident each is.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

CURRENT = "current.json"
LOG_GLOB = "log-*.jsonl"


@dataclass(frozen=True)
class Shadowing:
    challenger: str | None = None  # the BentoML tag scoring in shadow
    since: float | None = None  # when it started: only requests scored since then count


def read_current(folder: Path) -> Shadowing:
    """Which model shadows; none when the file is missing or unreadable (then nothing shadows,
    rather than the service failing to start or to answer)."""
    path = Path(folder) / CURRENT
    try:
        return Shadowing(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return Shadowing()


def write_current(folder: Path, challenger: str | None) -> Shadowing:
    """Start shadowing `challenger` (None: stop); written whole or not at all."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shadowing = Shadowing(challenger, time.time() if challenger else None)
    tmp = folder / f".{CURRENT}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(asdict(shadowing)))
    os.replace(tmp, folder / CURRENT)
    return shadowing


class ShadowWatch:
    """`current.json` as an HTTP worker sees it: re-read at most every `ttl_s` seconds."""

    def __init__(self, folder: Path, ttl_s: float = 1.0) -> None:
        self.folder, self.ttl_s = Path(folder), ttl_s
        self._seen, self._at = Shadowing(), float("-inf")

    def current(self) -> Shadowing:
        if time.monotonic() - self._at > self.ttl_s:
            self._seen = read_current(self.folder)
            self._at = time.monotonic()
        return self._seen

    def invalidate(self) -> None:
        self._at = float("-inf")


def compare(
    champion: np.ndarray, champion_classes: Sequence[str], challenger: np.ndarray, challenger_classes: Sequence[str]
) -> dict:
    """Per image: each model's top-1 label and score; `agree`: how many images get the same label."""
    top_a, top_b = champion.argmax(axis=1), challenger.argmax(axis=1)
    labels_a = [champion_classes[i] for i in top_a]
    labels_b = [challenger_classes[i] for i in top_b]
    return {
        "images": len(labels_a),
        "agree": sum(a == b for a, b in zip(labels_a, labels_b, strict=True)),
        "champion_labels": labels_a,
        "challenger_labels": labels_b,
        "champion_scores": [round(float(s), 6) for s in champion.max(axis=1)],
        "challenger_scores": [round(float(s), 6) for s in challenger.max(axis=1)],
    }


class ShadowLog:
    """This process's shadow log: one JSON line per request. Best effort: a write error loses
    the line (counted in `lost`), never the request."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / f"log-{os.getpid()}.jsonl"
        self.lost = 0
        self._lock = threading.Lock()

    def append(self, record: dict) -> None:
        line = json.dumps({"ts": time.time(), **record}) + "\n"
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(line)
        except OSError:
            self.lost += 1


def _records(folder: Path) -> list[dict]:
    out = []
    for path in sorted(Path(folder).glob(LOG_GLOB)):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:  # a line cut short by a crash
                continue
    return out


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def summarize(folder: Path, shadowing: Shadowing) -> dict:
    """The challenger's record since it started shadowing: requests and images scored, the
    fraction of images both models label alike, each model's mean top-1 score, and the requests
    not scored (`skipped`: shed under load or the model changed; `errors`)."""
    mine = [
        r
        for r in (_records(folder) if shadowing.challenger else [])
        if r.get("challenger") == shadowing.challenger and r.get("ts", 0) >= (shadowing.since or 0)
    ]
    scored = [r for r in mine if r.get("status") == "scored"]
    images = sum(r["images"] for r in scored)
    return {
        "challenger": shadowing.challenger,
        "since": shadowing.since,
        "requests": len(scored),
        "images": images,
        "agreement": sum(r["agree"] for r in scored) / images if images else None,
        "champion_confidence": _mean([s for r in scored for s in r["champion_scores"]]),
        "challenger_confidence": _mean([s for r in scored for s in r["challenger_scores"]]),
        "skipped": sum(r.get("status") == "skipped" for r in mine),
        "errors": sum(r.get("status") == "error" for r in mine),
    }
