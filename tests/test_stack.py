"""`clip-har up` / `down` for real on free loopback ports in a fresh state dir, and what `up`
does when told to bind beyond loopback: Prefect's basic auth, MLflow's Host allow-list, refusal
without the secret."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from clip_har.settings import TELEMETRY_OFF, load_settings

AUTH = "clip:not-a-real-s3cret"  # what the tests give CLIP_HAR_PREFECT_AUTH


def _ports(monkeypatch: pytest.MonkeyPatch, free_port: Callable[[], int]) -> None:
    for var in ("CLIP_HAR_PREFECT_PORT", "CLIP_HAR_MLFLOW_PORT", "CLIP_HAR_PORT"):
        monkeypatch.setenv(var, str(free_port()))  # never the defaults, should something start


def _api(url: str, path: str, auth: tuple[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{url}/api/{path}", json={}, auth=auth, timeout=10)


@pytest.mark.integration
@pytest.mark.slow
def test_up_then_down_twice_with_prefect_auth(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, free_port: Callable[[], int]
) -> None:
    """The whole stack with the Prefect server's basic auth on (on loopback too, when the secret
    is set): the server refuses anonymous calls, and every client `up` starts gets through."""
    from clip_har_cli import stack

    _ports(monkeypatch, free_port)
    monkeypatch.setenv("CLIP_HAR_PREFECT_AUTH", AUTH)
    monkeypatch.setenv("PREFECT_HOME", str(state_dir / "prefect"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_API_AUTH_STRING", raising=False)
    said: list[str] = []
    user, password = AUTH.split(":")
    try:
        urls = stack.up(said.append)
        urls_again = stack.up(said.append)  # idempotent: the same processes
        assert urls == urls_again and "service" not in urls  # no champion in a fresh state dir
        assert any("no packaged champion" in s for s in said)
        prefect = urls["prefect"]
        assert httpx.get(f"{prefect}/api/health", timeout=10).status_code == 200  # probes need no auth
        assert _api(prefect, "flows/filter").status_code == 401
        assert _api(prefect, "flows/filter", auth=(user, "wrong")).status_code == 401
        # `prefect deploy` got through: every deployment of prefect.yaml is there
        deployments = _api(prefect, "deployments/filter", auth=(user, password))
        assert deployments.status_code == 200 and len(deployments.json()) >= 4, deployments.text
        # the worker got through: its heartbeat reaches the pool (bounded wait)
        deadline, workers = time.monotonic() + 90, []
        while not workers and time.monotonic() < deadline:
            workers = _api(prefect, f"work_pools/{stack.WORK_POOL}/workers/filter", auth=(user, password)).json()
            time.sleep(1)
        assert workers, f"no worker heartbeat; see {stack.log_path(load_settings().state, 'worker')}"
        # the UI asks for the auth string and calls the API on the port the server really listens
        # on, not the default 4200
        ui = httpx.get(f"{prefect}/ui-settings", timeout=10).json()
        assert ui["api_url"] == f"{prefect}/api" and ui["auth"] == "BASIC", ui
        state = load_settings().state
        assert stack.api_url(state) == f"{prefect}/api"  # the CLI's flows go there, with the auth string
        assert stack.prefect_client_env(state, load_settings()) == {
            "PREFECT_API_URL": f"{prefect}/api",
            "PREFECT_API_AUTH_STRING": AUTH,
        }
        pids = {n: stack.running(state, n) for n in ("prefect", "worker", "mlflow")}
        assert all(pids.values()), pids
    finally:
        stopped = stack.down(said.append)
        os.environ.pop("PREFECT_API_AUTH_STRING", None)  # `up` exported it for this process's clients
    assert stopped == ["worker", "mlflow", "prefect"]  # served processes before the server
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
    for path in (state_dir / "stack").iterdir():  # logs, PIDs, the env file: never the secret
        assert password not in path.read_text(errors="replace"), path
    assert stack.down(said.append) == []
    assert stack.api_url(load_settings().state) is None


def test_an_exposed_stack_gets_basic_auth_and_a_host_allow_list(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clip_har_cli import stack

    settings = load_settings()  # the defaults: loopback, no auth, MLflow's own allow-list
    cmd, env = stack.prefect_server(settings)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and "PREFECT_SERVER_API_AUTH_STRING" not in env
    assert stack.prefect_auth_env(settings) == {}
    mlflow = stack.mlflow_command(settings, settings.state)
    assert mlflow[mlflow.index("--host") + 1] == "127.0.0.1" and "--allowed-hosts" not in mlflow

    monkeypatch.setenv("CLIP_HAR_STACK_HOST", "0.0.0.0")
    monkeypatch.setenv("CLIP_HAR_STACK_NAMES", "har.example.org, fd00::5")
    monkeypatch.setenv("CLIP_HAR_PREFECT_AUTH", AUTH)
    monkeypatch.setenv("CLIP_HAR_PREFECT_PORT", "4321")
    monkeypatch.setenv("CLIP_HAR_MLFLOW_PORT", "5432")
    settings = load_settings()
    settings.check_stack_exposure()  # all it needs is there
    cmd, env = stack.prefect_server(settings)
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert env["PREFECT_SERVER_API_AUTH_STRING"] == AUTH
    assert env["PREFECT_UI_API_URL"] == "http://har.example.org:4321/api"  # a browser elsewhere
    assert settings.prefect_api == "http://127.0.0.1:4321/api"  # clients on this machine
    assert stack.prefect_auth_env(settings) == {"PREFECT_API_AUTH_STRING": AUTH}
    mlflow = stack.mlflow_command(settings, settings.state)
    assert mlflow[mlflow.index("--host") + 1] == "0.0.0.0"
    hosts = mlflow[mlflow.index("--allowed-hosts") + 1].split(",")
    assert set(hosts) == {
        "localhost:5432",
        "127.0.0.1:5432",
        "[::1]:5432",
        "har.example.org:5432",
        "[fd00::5]:5432",
    }
    origins = mlflow[mlflow.index("--cors-allowed-origins") + 1].split(",")
    assert origins == ["http://har.example.org:5432", "http://[fd00::5]:5432"]
    # one address: it names itself
    monkeypatch.setenv("CLIP_HAR_STACK_HOST", "10.1.2.3")
    monkeypatch.delenv("CLIP_HAR_STACK_NAMES")
    settings = load_settings()
    assert stack.prefect_server(settings)[1]["PREFECT_UI_API_URL"] == "http://10.1.2.3:4321/api"
    assert settings.prefect_api == "http://10.1.2.3:4321/api"


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (MLflow forks uvicorn workers and a job runner),
    SIGKILL to what is left of it after a bounded wait."""

    def group_alive() -> bool:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 15
    while group_alive() and time.monotonic() < deadline:
        time.sleep(0.3)
    if group_alive():
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


@pytest.mark.integration
def test_an_exposed_mlflow_takes_only_the_allowed_host_headers(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, free_port: Callable[[], int], tmp_path: Path
) -> None:
    """The exact command `up` runs for a stack bound to 0.0.0.0, but bound to loopback here."""
    from clip_har_cli import stack

    port = free_port()
    monkeypatch.setenv("CLIP_HAR_STACK_HOST", "0.0.0.0")
    monkeypatch.setenv("CLIP_HAR_STACK_NAMES", "har.example.org")
    monkeypatch.setenv("CLIP_HAR_PREFECT_AUTH", AUTH)
    monkeypatch.setenv("CLIP_HAR_MLFLOW_PORT", str(port))
    settings = load_settings()
    cmd = stack.mlflow_command(settings, settings.state)
    cmd[cmd.index("--host") + 1] = "127.0.0.1"
    settings.state.mlflow_db.parent.mkdir(parents=True)
    env = {**os.environ, **TELEMETRY_OFF}
    with open(tmp_path / "mlflow.log", "w") as log:
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    search = f"{url}/api/2.0/mlflow/experiments/search"
    try:
        assert stack.wait_http(f"{url}/health", 120, alive=lambda: proc.poll() is None), (
            tmp_path / "mlflow.log"
        ).read_text()[-2000:]

        def get(host: str) -> int:
            return httpx.get(search, params={"max_results": 1}, headers={"Host": host}, timeout=10).status_code

        assert get(f"127.0.0.1:{port}") == 200
        assert get(f"har.example.org:{port}") == 200
        assert get(f"rebound.attacker.example:{port}") == 403  # a DNS-rebound web page
        assert get(f"10.1.2.3:{port}") == 403  # MLflow's default would take any private address

        def post(origin: str) -> int:
            return httpx.post(search, json={"max_results": 1}, headers={"Origin": origin}, timeout=10).status_code

        assert post(f"http://har.example.org:{port}") == 200
        assert post("http://attacker.example") == 403  # a cross-site page may not change state
    finally:
        _stop(proc)


@pytest.mark.parametrize(
    ("stack_host", "auth", "names", "needle"),
    [
        ("0.0.0.0", "", "har.example.org", "without CLIP_HAR_PREFECT_AUTH"),
        ("10.1.2.3", "", "", "without CLIP_HAR_PREFECT_AUTH"),
        ("0.0.0.0", AUTH, "", "needs CLIP_HAR_STACK_NAMES"),  # MLflow would take no remote name
    ],
    ids=["wildcard-without-auth", "address-without-auth", "wildcard-without-names"],
)
def test_up_refuses_an_exposed_stack_without_what_it_needs(
    monkeypatch: pytest.MonkeyPatch,
    state_dir: Path,
    free_port: Callable[[], int],
    stack_host: str,
    auth: str,
    names: str,
    needle: str,
) -> None:
    from clip_har_cli import stack
    from clip_har_cli.main import app

    _ports(monkeypatch, free_port)
    for var, value in (("STACK_HOST", stack_host), ("PREFECT_AUTH", auth), ("STACK_NAMES", names)):
        monkeypatch.setenv(f"CLIP_HAR_{var}", value)
    try:
        result = CliRunner().invoke(app, ["up"])
        assert result.exit_code == 1 and needle in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
        assert AUTH not in result.output
        assert not state_dir.exists()  # nothing started, nothing written
    finally:
        stopped = stack.down(print)  # should a regression start the stack, stop it
    assert stopped == []
