"""`clip-har up` / `down` for real on free loopback ports in a fresh state dir."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_up_then_down_twice(state_dir: Path, monkeypatch: pytest.MonkeyPatch, free_port: Callable[[], int]) -> None:
    from clip_har_cli import stack

    for var in ("CLIP_HAR_PREFECT_PORT", "CLIP_HAR_MLFLOW_PORT", "CLIP_HAR_PORT"):
        monkeypatch.setenv(var, str(free_port()))
    monkeypatch.setenv("PREFECT_HOME", str(state_dir / "prefect"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    said: list[str] = []
    try:
        urls = stack.up(said.append)
        urls_again = stack.up(said.append)  # idempotent: the same processes
        assert urls == urls_again and "service" not in urls  # no champion in a fresh state dir
        assert any("no packaged champion" in s for s in said)
        assert httpx.get(f"{urls['prefect']}/api/health", timeout=10).status_code == 200
        # the UI calls the API on the port the server really listens on, not the default 4200
        ui = httpx.get(f"{urls['prefect']}/ui-settings", timeout=10).json()
        assert ui["api_url"] == f"{urls['prefect']}/api", ui
        assert stack.api_url(stack.StateDir.from_env()) == f"{urls['prefect']}/api"  # the CLI's flows go there
        pids = {n: stack.running(stack.StateDir.from_env(), n) for n in ("prefect", "worker", "mlflow")}
        assert all(pids.values()), pids
    finally:
        stopped = stack.down(said.append)
    assert stopped == ["worker", "mlflow", "prefect"]  # served processes before the server
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
    assert stack.down(said.append) == []
    assert stack.api_url(stack.StateDir.from_env()) is None
