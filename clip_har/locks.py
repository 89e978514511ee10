"""Exclusive locks between processes on one machine (flock on a file in the state dir): two
pipelines at once (`clip-har pipeline run` beside a deployment run) take turns on the data
registry and on moving the champion alias; a training run holds one while it trains, so a later
run can tell a killed run from a live one."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: Path) -> Iterator[int]:
    """Hold an exclusive lock on `path` (created if needed); waits for another holder to finish.
    The OS drops the lock if the holder dies, so a killed run never leaves it stuck. Yields the
    lock's file descriptor: a child process handed it (`pass_fds`) keeps the lock held after
    this process dies, until the child exits too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield f.fileno()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def is_locked(path: Path) -> bool:
    """Whether some process holds `path`'s lock right now (a probe that never waits)."""
    try:
        with open(path) as f:  # read-only: a probe must not create the file
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
            return False
    except FileNotFoundError:
        return False
