"""`clip-har up` / `clip-har down`: the local stack — Prefect server (UI), a process worker with
every deployment from prefect.yaml, the BentoML service for the champion, and MLflow. Loopback
unless configured otherwise: the Prefect server and MLflow bind the `stack_host` setting, the
service the `host` setting. Beyond loopback the Prefect server asks for basic auth
(`prefect_auth`) and MLflow takes only the Host headers it was told about.

Databases: SQLite under the state dir (the MLflow UI reads the file clients write), or
PostgreSQL (`db`, `db_url`; clip_har.postgres), where a local cluster starts first and stops
last, and MLflow runs as a tracking server with proxied artifacts that every client reaches over
HTTP. With `mlflow_server` set, MLflow is elsewhere and `up` starts none.
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

from clip_har import postgres
from clip_har.postgres import Server
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
# A given database server's URL (a password): no process gets it; the Prefect and MLflow servers
# get their own database's URL from it.
DB_SECRETS = frozenset({env_name("db_url")})


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
    # `up` never reaps its children: a server that crashed at start is a zombie, which kill(0) would call alive
    if not postgres.process_alive(pid):
        path.unlink(missing_ok=True)
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


def prefect_server(settings: Settings, db: Server | None = None) -> tuple[list[str], dict[str, str]]:
    """The command of `up`'s Prefect server and what it adds to the environment; its database
    is on `db`, else the SQLite file under PREFECT_HOME."""
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
    if db is not None:  # the server runs Prefect's migrations on it at start
        env.update(db.env, PREFECT_SERVER_DATABASE_CONNECTION_URL=db.prefect_url)
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", settings.stack_host, "--port", port]
    return cmd, env


def mlflow_command(settings: Settings, state: StateDir) -> list[str]:
    """`up`'s MLflow UI on the SQLite file that clients write themselves (the default)."""
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", state.mlflow_uri]
    return cmd + _mlflow_listen(settings)


def mlflow_server(settings: Settings, state: StateDir, db: Server) -> tuple[list[str], dict[str, str]]:
    """`up`'s MLflow tracking server on PostgreSQL and what it adds to the environment. Artifacts
    are proxied: clients upload and download them over HTTP (`mlflow-artifacts:` URIs) and the
    server keeps them under <state>/mlflow-artifacts, so workers and services on other hosts need
    no shared disk. The store URI travels in the environment: `ps` shows command lines to anyone."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--serve-artifacts"]
    cmd += ["--artifacts-destination", str(state.mlflow_served_artifacts), *_mlflow_listen(settings)]
    env = {
        **db.env,
        "MLFLOW_BACKEND_STORE_URI": db.mlflow_url,
        # MLflow 3's GenAI job runner: seven more processes that nothing here uses
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    return cmd, env


def _mlflow_listen(settings: Settings) -> list[str]:
    """Where MLflow listens. Beyond loopback, MLflow's default Host allow-list (loopback and every
    private address) is replaced by loopback and the stack's names, so a DNS-rebound web page is
    refused; browsers on those names' origins may change state (MLflow admits loopback ones)."""
    port = settings.mlflow_port
    args = ["--host", settings.stack_host, "--port", str(port)]
    if settings.stack_exposed:
        names = [url_host(n) for n in settings.public_names]
        hosts = [f"{n}:{port}" for n in ("localhost", "127.0.0.1", "[::1]", *names)]
        origins = [f"http://{n}:{port}" for n in names]
        args += ["--allowed-hosts", ",".join(hosts), "--cors-allowed-origins", ",".join(origins)]
    return args


def start_prefect_server(settings: Settings, state: StateDir, db: Server | None = None) -> int:
    """`up`'s Prefect server (on `db` when given), healthy; its PID."""
    server_cmd, server_env = prefect_server(settings, db)
    pid = _start(state, "prefect", server_cmd, _child_env(server_env))
    # first start on PostgreSQL: ~20 s of migrations on 2 cores
    if not wait_http(f"{settings.prefect_api}/health", 180, alive=lambda: running(state, "prefect") is not None):
        raise RuntimeError(f"Prefect server did not start; see {log_path(state, 'prefect')}")
    return pid


def start_mlflow_server(settings: Settings, state: StateDir, db: Server, env: dict[str, str]) -> int:
    """`up`'s MLflow tracking server on `db` (environment `env` plus its own), healthy; its PID."""
    cmd, extra = mlflow_server(settings, state, db)
    pid = _start(state, "mlflow", cmd, {**env, **extra})
    if not wait_http(f"{settings.mlflow_url}/health", 180, alive=lambda: running(state, "mlflow") is not None):
        raise RuntimeError(f"MLflow server did not start; see {log_path(state, 'mlflow')}")
    return pid


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """child_env without the database server's URL (see DB_SECRETS)."""
    return {k: v for k, v in child_env(extra).items() if k not in DB_SECRETS}


def _start_prefect(settings: Settings, state: StateDir, clients: dict[str, str], db: Server | None) -> None:
    """The server, then the work pool and prefect.yaml's deployments, then the worker; `clients`
    is the environment of the Prefect clients."""
    py = sys.executable
    start_prefect_server(settings, state, db)
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
    if settings.mlflow_server:  # elsewhere: it must answer before anything starts here
        from clip_har.tracking import TrackingServerDown, check_server

        try:
            check_server(settings.mlflow_server)
        except TrackingServerDown as exc:
            raise RuntimeError(str(exc)) from None
    db = postgres.ensure(settings)  # first: both servers keep their data there (PostgresError: one line)
    if db is not None:
        echo(f"databases {postgres.PREFECT_DB} and {postgres.MLFLOW_DB} on PostgreSQL {db}")
    auth = prefect_auth_env(settings)
    state.apply_env(extra=auth)  # `loop-demo` calls the API from this process once `up` returns
    api = settings.prefect_api
    # The Prefect clients: the worker (and the flows it runs, which inherit its environment)
    # reach the server, the service (service-reload) and MLflow's server, if any, through these.
    tracking = {env_name("mlflow_server"): settings.tracking_server} if settings.tracking_server else {}
    env = _child_env({"PREFECT_API_URL": api, **auth, env_name("service_url"): settings.service, **tracking})
    not_prefect = {k: v for k, v in env.items() if k not in PREFECT_SECRETS}  # MLflow, the service
    _start_prefect(settings, state, env, db)
    has_champion = _start_mlflow(settings, state, not_prefect, db, echo)
    urls = {"prefect": settings.prefect_url, "mlflow": settings.tracking_server or settings.mlflow_url}
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


def _start_mlflow(
    settings: Settings, state: StateDir, env: dict[str, str], db: Server | None, echo: Callable[[str], object]
) -> bool:
    """MLflow as configured: elsewhere, a tracking server on PostgreSQL, or the UI on the SQLite
    file; whether a packaged champion is there to serve."""
    if settings.mlflow_server:
        return _has_champion(settings, state, echo)
    if db is not None:
        start_mlflow_server(settings, state, db, env)
        return _has_champion(settings, state, echo)  # through the server, which is up now
    # SQLite: look before MLflow starts, or on a fresh state dir both would create its database
    # at once (alembic fails in one of them)
    found = _has_champion(settings, state, echo)
    _start(state, "mlflow", mlflow_command(settings, state), env)
    return found


def _has_champion(settings: Settings, state: StateDir, echo: Callable[[str], object]) -> bool:
    from clip_har.registry import champion_bento  # MLflow: only here, not for every `api_url()`

    try:
        champion_bento(state, settings.model_name)
    except LookupError as exc:
        echo(f"no packaged champion yet ({exc}); the service starts with the next `make up` after `make demo`")
        return False
    return True


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


def _wait_gone(pgid: int, seconds: float) -> bool:
    deadline = time.time() + seconds
    while _group_alive(pgid):
        if time.time() > deadline:
            return False
        time.sleep(0.3)
    return True


def down(echo=print) -> list[str]:
    settings = load_settings()
    state = settings.state
    stopped = []
    for name in STOP_ORDER:
        pid = running(state, name)
        if not pid:
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        if not _wait_gone(pid, 30):
            os.killpg(pid, signal.SIGKILL)
            _wait_gone(pid, 10)  # stopped means gone: the next process may take its port
        _pidfile(state, name).unlink(missing_ok=True)
        stopped.append(name)
        echo(f"stopped {name} (pid {pid})")
    # the local cluster last, whatever the settings say now: its clients are gone
    if pid := postgres.cluster(settings).stop():
        stopped.append("postgres")
        echo(f"stopped postgres (pid {pid})")
    return stopped
