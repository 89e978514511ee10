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

from clip_har.settings import WORK_POOL, StateDir, child_env, env_name, load_settings

ROOT = Path(__file__).resolve().parents[1]
STOP_ORDER = ("service", "worker", "mlflow", "prefect")  # served processes before the server


def _pidfile(state: StateDir, name: str) -> Path:
    return state.stack / f"{name}.pid"


def log_path(state: StateDir, name: str) -> Path:
    """Where a stack process (prefect, worker, mlflow, service) writes its output."""
    return state.stack / f"{name}.log"


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
    state.stack.mkdir(parents=True, exist_ok=True)
    log = open(log_path(state, name), "a")  # the child owns it
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


def up(echo=print) -> dict[str, str]:
    settings = load_settings()
    try:
        settings.check_exposure()  # the service `up` starts listens on the `host` setting
    except ValueError as exc:
        raise RuntimeError(str(exc)) from exc
    state = settings.state
    state.apply_env()
    api = settings.prefect_api
    # the worker's flows reach the service (service-reload) and the server through these
    env = child_env({"PREFECT_API_URL": api, env_name("service_url"): settings.service})
    py = sys.executable
    # The UI calls the API at PREFECT_UI_API_URL, which otherwise defaults to port 4200
    # whatever port the server listens on ("Can't connect to Server API").
    server_env = child_env({"PREFECT_UI_API_URL": api, "PREFECT_SERVER_API_PORT": str(settings.prefect_port)})
    _start(
        state,
        "prefect",
        [py, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(settings.prefect_port)],
        server_env,
    )
    if not wait_http(f"{api}/health"):
        raise RuntimeError(f"Prefect server did not start; see {log_path(state, 'prefect')}")
    subprocess.run(
        [py, "-m", "prefect", "work-pool", "create", WORK_POOL, "--type", "process"],
        env=env,
        cwd=ROOT,
        capture_output=True,
    )
    deploy = subprocess.run(
        [py, "-m", "prefect", "--no-prompt", "deploy", "--all"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    if deploy.returncode != 0:
        raise RuntimeError(f"prefect deploy failed: {deploy.stdout[-1500:]}{deploy.stderr[-1500:]}")
    _start(state, "worker", [py, "-m", "prefect", "worker", "start", "--pool", WORK_POOL], env)
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
        str(settings.mlflow_port),
    ]
    _start(state, "mlflow", mlflow_cmd, env)
    urls = {"prefect": settings.prefect_url, "mlflow": settings.mlflow_url}
    serve = [py, "-m", "clip_har_cli.main", "serve", "--port", str(settings.port)]
    from clip_har.registry import champion_bento  # MLflow: only here, not for every `api_url()`

    try:
        champion_bento(state, settings.model_name)
    except LookupError as exc:
        echo(f"no packaged champion yet ({exc}); the service starts with the next `make up` after `make demo`")
    else:
        _start(state, "service", serve, env)
        urls["service"] = f"http://127.0.0.1:{settings.port}"
        if not wait_http(f"{urls['service']}/readyz", 180, alive=lambda: running(state, "service") is not None):
            echo(f"the service is not ready yet; see {log_path(state, 'service')}")
    (state.stack / "env").write_text(f"export PREFECT_API_URL={api}\n")
    return urls


def api_url(state: StateDir) -> str | None:
    """The stack's Prefect API while its server runs (what `up` wrote to <state>/stack/env)."""
    env = state.stack / "env"
    if not running(state, "prefect") or not env.is_file():
        return None
    return env.read_text().strip().removeprefix("export PREFECT_API_URL=") or None


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


def down(echo=print) -> list[str]:
    state = load_settings().state
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
