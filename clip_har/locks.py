"""Exclusive locks between processes on one machine (flock on a file in the state dir): two
pipelines at once (`clip-har pipeline run` beside a deployment run) take turns on the data
registry and on moving the champion alias."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if needed); waits for another holder to finish.
    The OS drops the lock if the holder dies, so a killed run never leaves it stuck."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
