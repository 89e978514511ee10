"""`clip-har up` / `clip-har down`: the local stack on loopback — Prefect server (SQLite, UI),
a process worker with every deployment from prefect.yaml, the BentoML service for the champion,
and the MLflow UI. Logs and PIDs live under <state>/stack; running either twice is harmless."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from clip_har.state import StateDir

ROOT = Path(__file__).resolve().parents[1]
STOP_ORDER = ("service", "worker", "mlflow", "prefect")  # served processes before the server


def ports() -> dict[str, int]:
    return {
        "prefect": int(os.environ.get("CLIP_HAR_PREFECT_PORT", "4200")),
        "mlflow": int(os.environ.get("CLIP_HAR_MLFLOW_PORT", "5000")),
        "service": int(os.environ.get("CLIP_HAR_PORT", "3000")),
    }


def _pidfile(state: StateDir, name: str) -> Path:
    return state.root / "stack" / f"{name}.pid"


def running(state: StateDir, name: str) -> int | None:
    path = _pidfile(state, name)
    if not path.is_file():
        return None
    pid = int(path.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        path.unlink()
        return None
    return pid


def _start(state: StateDir, name: str, cmd: list[str], env: dict[str, str]) -> int:
    pid = running(state, name)
    if pid:
        return pid
    (state.root / "stack").mkdir(parents=True, exist_ok=True)
    log = open(state.root / "stack" / f"{name}.log", "a")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    _pidfile(state, name).write_text(str(proc.pid))
    return proc.pid


def wait_http(url: str, seconds: float = 90, alive: Callable[[], bool] | None = None) -> bool:
    """Poll `url` until it answers below 500, the deadline passes, or `alive()` turns False."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return True
        except httpx.HTTPError:
            pass
        if alive is not None and not alive():
            return False
        time.sleep(0.5)
    return False


def up(echo=print) -> dict[str, str]:  # noqa: ANN001
    state = StateDir.from_env()
    state.apply_env()
    p = ports()
    api = f"http://127.0.0.1:{p['prefect']}/api"
    # the worker's flows reach the service (service-reload) and the server through these
    env = {**os.environ, "PREFECT_API_URL": api, "CLIP_HAR_SERVICE_URL": f"http://127.0.0.1:{p['service']}"}
    py = sys.executable
    _start(
        state,
        "prefect",
        [py, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(p["prefect"])],
        dict(os.environ),
    )
    if not wait_http(f"{api}/health"):
        raise RuntimeError(f"Prefect server did not start; see {state.root / 'stack' / 'prefect.log'}")
    subprocess.run(
        [py, "-m", "prefect", "work-pool", "create", "clip-har-process", "--type", "process"],
        env=env,
        cwd=ROOT,
        capture_output=True,
    )
    deploy = subprocess.run(
        [py, "-m", "prefect", "--no-prompt", "deploy", "--all"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    if deploy.returncode != 0:
        raise RuntimeError(f"prefect deploy failed: {deploy.stdout[-1500:]}{deploy.stderr[-1500:]}")
    _start(state, "worker", [py, "-m", "prefect", "worker", "start", "--pool", "clip-har-process"], env)
    mlflow_cmd = [
        py,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        state.mlflow_uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(p["mlflow"]),
    ]
    _start(state, "mlflow", mlflow_cmd, env)
    urls = {"prefect": f"http://127.0.0.1:{p['prefect']}", "mlflow": f"http://127.0.0.1:{p['mlflow']}"}
    serve = [py, "-m", "clip_har_cli.main", "serve", "--port", str(p["service"])]
    if _has_champion(state):
        _start(state, "service", serve, env)
        urls["service"] = f"http://127.0.0.1:{p['service']}"
        if not wait_http(f"{urls['service']}/readyz", 180, alive=lambda: running(state, "service") is not None):
            echo(f"the service is not ready yet; see {state.root / 'stack' / 'service.log'}")
    else:
        echo("no packaged champion yet: the service starts with the next `make up` after `make demo`")
    (state.root / "stack" / "env").write_text(f"export PREFECT_API_URL={api}\n")
    return urls


def api_url(state: StateDir) -> str | None:
    """The stack's Prefect API while its server runs (what `up` wrote to <state>/stack/env)."""
    env = state.root / "stack" / "env"
    if not running(state, "prefect") or not env.is_file():
        return None
    return env.read_text().strip().removeprefix("export PREFECT_API_URL=") or None


def _has_champion(state: StateDir) -> bool:
    if not state.mlflow_db.is_file():
        return False
    from clip_har.registry import champion_version
    from clip_har.tracking import client

    c = client(state.mlflow_uri)
    version = champion_version(c, "clip-har")
    return bool(version and c.get_model_version("clip-har", version).tags.get("lineage.bento_model"))


def _group_alive(pgid: int) -> bool:
    """True while any process of the group exists; reaps the leader if it is our own child."""
    try:
        os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child (the usual case: `clip-har up` exited long ago)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def down(echo=print) -> list[str]:  # noqa: ANN001
    state = StateDir.from_env()
    stopped = []
    for name in STOP_ORDER:
        pid = running(state, name)
        if not pid:
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.time() + 30
        while _group_alive(pid) and time.time() < deadline:
            time.sleep(0.3)
        if _group_alive(pid):
            os.killpg(pid, signal.SIGKILL)
        _pidfile(state, name).unlink(missing_ok=True)
        stopped.append(name)
        echo(f"stopped {name} (pid {pid})")
    return stopped
