"""`clip-har up` / `clip-har down`: the local stack — Prefect server (SQLite, UI), a process
worker with every deployment from prefect.yaml, the BentoML service for the champion, and the
MLflow UI. Loopback unless configured otherwise: the Prefect server and MLflow bind the
`stack_host` setting, the service the `host` setting. Beyond loopback the Prefect server asks
for basic auth (`prefect_auth`) and MLflow takes only the Host headers it was told about.
Logs and PIDs live under <state>/stack; running either twice is harmless."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from clip_har.settings import (
    WORK_POOL,
    Settings,
    StateDir,
    child_env,
    client_host,
    env_name,
    load_settings,
    url_host,
)

ROOT = Path(__file__).resolve().parents[1]
STOP_ORDER = ("service", "worker", "mlflow", "prefect")  # served processes before the server
# What carries the Prefect server's auth string: only Prefect clients (and the server) get these.
PREFECT_SECRETS = frozenset({"PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING", env_name("prefect_auth")})


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


def prefect_auth_env(settings: Settings) -> dict[str, str]:
    """What a Prefect client needs to pass the server's basic auth; nothing when it has none."""
    secret = settings.prefect_auth.get_secret_value()
    return {"PREFECT_API_AUTH_STRING": secret} if secret else {}


def prefect_client_env(state: StateDir, settings: Settings) -> dict[str, str]:
    """What a Prefect client on this machine needs while the stack runs: its API URL and the
    auth string when set; nothing while it is down (flows then run in ephemeral mode)."""
    url = api_url(state)
    return {"PREFECT_API_URL": url, **prefect_auth_env(settings)} if url else {}


def prefect_server(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """The command of `up`'s Prefect server and what it adds to the environment."""
    port = str(settings.prefect_port)
    # The UI calls the API at PREFECT_UI_API_URL, which otherwise defaults to port 4200 whatever
    # port the server listens on ("Can't connect to Server API"); a browser on another machine
    # calls it by a name it knows, not by this machine's loopback.
    ui_api = settings.prefect_api
    if settings.stack_exposed:
        ui_api = f"http://{url_host(settings.public_names[0])}:{port}/api"
    env = {"PREFECT_UI_API_URL": ui_api, "PREFECT_SERVER_API_PORT": port}
    if secret := settings.prefect_auth.get_secret_value():
        env["PREFECT_SERVER_API_AUTH_STRING"] = secret  # every request but /api/health needs it
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", settings.stack_host, "--port", port]
    return cmd, env


def mlflow_command(settings: Settings, state: StateDir) -> list[str]:
    """`up`'s MLflow UI. Beyond loopback, MLflow's default Host allow-list (loopback and every
    private address) is replaced by loopback and the stack's names, so a DNS-rebound web page is
    refused; browsers on those names' origins may change state (MLflow admits loopback ones)."""
    port = settings.mlflow_port
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", state.mlflow_uri]
    cmd += ["--host", settings.stack_host, "--port", str(port)]
    if settings.stack_exposed:
        names = [url_host(n) for n in settings.public_names]
        hosts = [f"{n}:{port}" for n in ("localhost", "127.0.0.1", "[::1]", *names)]
        origins = [f"http://{n}:{port}" for n in names]
        cmd += ["--allowed-hosts", ",".join(hosts), "--cors-allowed-origins", ",".join(origins)]
    return cmd


def _start_prefect(settings: Settings, state: StateDir, clients: dict[str, str]) -> None:
    """The server, then the work pool and prefect.yaml's deployments, then the worker; `clients`
    is the environment of the Prefect clients."""
    py = sys.executable
    server_cmd, server_env = prefect_server(settings)
    _start(state, "prefect", server_cmd, child_env(server_env))
    if not wait_http(f"{settings.prefect_api}/health"):
        raise RuntimeError(f"Prefect server did not start; see {log_path(state, 'prefect')}")
    subprocess.run(
        [py, "-m", "prefect", "work-pool", "create", WORK_POOL, "--type", "process"],
        env=clients,
        cwd=ROOT,
        capture_output=True,
    )
    deploy = subprocess.run(
        [py, "-m", "prefect", "--no-prompt", "deploy", "--all"], env=clients, cwd=ROOT, capture_output=True, text=True
    )
    if deploy.returncode != 0:
        raise RuntimeError(f"prefect deploy failed: {deploy.stdout[-1500:]}{deploy.stderr[-1500:]}")
    _start(state, "worker", [py, "-m", "prefect", "worker", "start", "--pool", WORK_POOL], clients)


def up(echo=print) -> dict[str, str]:
    settings = load_settings()
    try:
        settings.check_exposure()  # the service `up` starts listens on the `host` setting
        settings.check_stack_exposure()  # the Prefect server and MLflow on `stack_host`
    except ValueError as exc:
        raise RuntimeError(str(exc)) from exc
    state = settings.state
    auth = prefect_auth_env(settings)
    state.apply_env(extra=auth)  # `loop-demo` calls the API from this process once `up` returns
    api = settings.prefect_api
    # The Prefect clients: the worker (and the flows it runs, which inherit its environment)
    # reach the server and the service (service-reload) through these.
    env = child_env({"PREFECT_API_URL": api, **auth, env_name("service_url"): settings.service})
    not_prefect = {k: v for k, v in env.items() if k not in PREFECT_SECRETS}  # MLflow, the service
    _start_prefect(settings, state, env)
    from clip_har.registry import champion_bento  # MLflow: only here, not for every `api_url()`

    try:
        # before MLflow starts: on a fresh state dir both would create its database at once
        # (alembic fails in one of them)
        champion_bento(state, settings.model_name)
        has_champion = True
    except LookupError as exc:
        has_champion = False
        echo(f"no packaged champion yet ({exc}); the service starts with the next `make up` after `make demo`")
    _start(state, "mlflow", mlflow_command(settings, state), not_prefect)
    urls = {"prefect": settings.prefect_url, "mlflow": settings.mlflow_url}
    if settings.stack_exposed:
        echo(f"Prefect (basic auth) and MLflow listen on {settings.stack_host} for {', '.join(settings.public_names)}")
    if has_champion:
        serve = [sys.executable, "-m", "clip_har_cli.main", "serve", "--port", str(settings.port)]
        _start(state, "service", serve, not_prefect)
        urls["service"] = f"http://{client_host(settings.host)}:{settings.port}"
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
