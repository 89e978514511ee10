"""Stopping what a test started: a process started with `start_new_session=True` leads its own
process group, so its children (server workers, torchrun's ranks, a worker's flow runs) stop with it."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_group(proc: subprocess.Popen, grace_s: float = 60) -> None:
    """SIGTERM to the group (graceful: servers run their shutdown hooks), SIGKILL after `grace_s`."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
