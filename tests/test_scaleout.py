"""Beyond one machine, end to end, on this machine: PostgreSQL started for real; the Prefect
server and the MLflow tracking server on it, listening on a bridge; two Prefect workers on two
other hosts (network namespaces, each with a state dir of its own: no shared disk) polling one
work pool; the training pipeline run twice at once: one run trains the tiny model to a
promotion, the other is cancelled by the one-run-at-a-time rule; two new-data events from a
worker's host start two runs through the server's automation, of which one trains and the other
stands down; a service on a third host
fetches the new champion through the MLflow server and answers."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import netns
import pytest
from PIL import Image
from procs import stop_group

from clip_har import postgres
from clip_har.settings import DATA_EVENT, DATA_RESOURCE, TELEMETRY_OFF, WORK_POOL, load_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
AUTH = "clip:scale-out-pw"
TOKEN = "scale-out-token"


@contextmanager
def _process(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=f, stderr=f, start_new_session=True)
    try:
        yield proc
    finally:  # the whole group: a worker's flow runs, the service's workers
        stop_group(proc)


def _flow_runs(api: dict[str, str], ids: list[str], reason: str = "") -> dict[str, str]:
    """State types of the flow runs `ids`, or of every training run whose `reason` parameter
    starts with `reason`, read from the server as any client does."""
    out = subprocess.run(
        [sys.executable, "-c", READ_RUNS, reason, *ids], env=api, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


READ_RUNS = """
import json, sys
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
reason, ids = sys.argv[1], sys.argv[2:]
with get_client(sync_client=True) as c:
    if ids:
        runs = [c.read_flow_run(i) for i in ids]
    else:
        flows = FlowFilter(name=FlowFilterName(any_=["training-pipeline"]))
        runs = c.read_flow_runs(flow_filter=flows)
        runs = [r for r in runs if str(r.parameters.get("reason", "")).startswith(reason)]
    print(json.dumps({str(r.id): r.state_type.value for r in runs}))
"""
EMIT = """
import sys
from prefect.events import emit_event
for i in range(2):
    emit_event(event=sys.argv[1], resource={"prefect.resource.id": sys.argv[2]}, payload={"data_version": f"tiny-v{i}"})
"""


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 96), (200, 120, 40)).save(buf, format="JPEG")
    return buf.getvalue()


def test_stack_workers_and_service_on_separate_hosts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free_port: Callable[[], int], reachable: None
) -> None:
    from clip_har.registry import champion_bento, champion_version
    from clip_har.tracking import client
    from clip_har_cli import stack

    if reason := netns.unavailable():
        pytest.skip(reason)
    try:
        postgres.find_programs()
    except postgres.PostgresError as exc:
        pytest.skip(f"PostgreSQL is not installed: {exc}")
    started = time.monotonic()
    with netns.hosts(3) as net:
        gw = net.gateway
        ports = {"prefect": free_port(), "mlflow": free_port(), "service": free_port()}
        # the stack's host (this namespace): PostgreSQL on loopback, the servers on the bridge
        for var, value in {
            "CLIP_HAR_HOME": str(tmp_path / "stack"),
            "CLIP_HAR_DB": "postgres",
            "CLIP_HAR_STACK_HOST": gw,
            "CLIP_HAR_PREFECT_AUTH": AUTH,
            "CLIP_HAR_PREFECT_PORT": str(ports["prefect"]),
            "CLIP_HAR_MLFLOW_PORT": str(ports["mlflow"]),
            "PREFECT_HOME": str(tmp_path / "stack" / "prefect"),
        }.items():
            monkeypatch.setenv(var, value)
        monkeypatch.delenv("PREFECT_API_URL", raising=False)
        settings = load_settings()
        state = settings.state
        api = {
            **stack._child_env(TELEMETRY_OFF),
            "PREFECT_API_URL": settings.prefect_api,
            "PREFECT_API_AUTH_STRING": AUTH,
        }
        try:
            db = postgres.ensure(settings)
            stack.start_prefect_server(settings, state, db)
            stack.start_mlflow_server(settings, state, db, stack._child_env(TELEMETRY_OFF))

            def prefect(*args: str) -> subprocess.CompletedProcess:
                """The Prefect CLI as a client of the stack's server."""
                cmd = [sys.executable, "-m", "prefect", *args]
                return subprocess.run(cmd, env=api, cwd=ROOT, capture_output=True, text=True, timeout=300)

            # the work pool and prefect.yaml's deployments, as `up` makes them
            prefect("work-pool", "create", WORK_POOL, "--type", "process")
            deploy = prefect("--no-prompt", "deploy", "--all")
            assert deploy.returncode == 0, deploy.stdout[-2000:] + deploy.stderr[-2000:]

            def host_env(i: int, **extra: str) -> dict[str, str]:
                """A host of its own: its state dir, the servers by address, nothing else shared."""
                home = tmp_path / f"host{i}"
                local = ("CLIP_HAR_", "PREFECT_HOME", "MLFLOW_TRACKING")  # the stack host's own
                env = {k: v for k, v in api.items() if not k.startswith(local)}
                return {
                    **env,
                    "CLIP_HAR_HOME": str(home),
                    "PREFECT_HOME": str(home / "prefect"),
                    "BENTOML_HOME": str(home / "bentoml"),
                    "CLIP_HAR_MLFLOW_SERVER": settings.mlflow_url,
                    "CLIP_HAR_DVC_REMOTE": str(tmp_path / "dvc-remote"),  # stands in for s3://
                    "CLIP_HAR_PROFILE": "tiny",
                    "OMP_NUM_THREADS": "1",
                    **extra,
                }

            worker = [sys.executable, "-m", "prefect", "worker", "start", "--pool", WORK_POOL, "--limit", "1"]
            with (
                _process(net.hosts[0].command(worker), host_env(0), tmp_path / "worker0.log"),
                _process(net.hosts[1].command(worker), host_env(1), tmp_path / "worker1.log"),
            ):
                runs = []
                for _ in range(2):  # at once: the deployment's concurrency limit lets one train
                    out = prefect("deployment", "run", "training-pipeline/training-pipeline")
                    assert out.returncode == 0, out.stderr[-2000:]
                    runs.append(next(w for line in out.stdout.splitlines() for w in line.split() if w.count("-") == 4))
                deadline = time.monotonic() + 900
                final = {"COMPLETED", "CANCELLED", "FAILED", "CRASHED"}
                states = _flow_runs(api, runs)
                while not set(states.values()) <= final and time.monotonic() < deadline:
                    time.sleep(5)
                    states = _flow_runs(api, runs)
                logs = "".join((tmp_path / f"worker{i}.log").read_text()[-3000:] for i in range(2))
                assert sorted(states.values()) == ["CANCELLED", "COMPLETED"], (states, logs)

                # two new-data events from a worker's host: the automation starts a run for each,
                # the workers take them, and one trains while the other stands down
                emit = subprocess.run(
                    net.hosts[0].command([sys.executable, "-c", EMIT, DATA_EVENT, f"{DATA_RESOURCE}.tiny"]),
                    env=host_env(0),
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                assert emit.returncode == 0, emit.stderr[-2000:]
                triggered: dict[str, str] = {}
                while time.monotonic() < deadline:
                    triggered = {k: v for k, v in _flow_runs(api, [], "new data").items() if k not in runs}
                    if len(triggered) == 2 and set(triggered.values()) <= final:
                        break
                    time.sleep(5)
                assert sorted(triggered.values()) == ["CANCELLED", "COMPLETED"], triggered

            # promoted, as the registry on PostgreSQL says through the MLflow server
            c = client(settings.mlflow_url)
            assert champion_version(c, settings.model_name) in {"1", "2"}  # the event-triggered run may promote too
            champion = champion_bento(state, settings.model_name)
            # the service's host has never seen the model: it comes through the MLflow server
            service = net.hosts[2]
            serve = [sys.executable, "-m", "clip_har_cli.main", "serve", "--host", service.address]
            serve += ["--port", str(ports["service"])]
            env = host_env(2, CLIP_HAR_ADMIN_TOKEN=TOKEN)
            with _process(service.command(serve), env, tmp_path / "service.log") as proc:
                url = f"http://{service.address}:{ports['service']}"
                assert stack.wait_http(f"{url}/readyz", 240, alive=lambda: proc.poll() is None), (
                    tmp_path / "service.log"
                ).read_text()[-3000:]
                r = httpx.post(f"{url}/predict", files=[("images", ("a.jpg", _jpeg()))], timeout=60)
                assert r.status_code == 200, r.text
                assert r.json()["model_version"] == champion.bento_model
            assert not (tmp_path / "host2" / "mlflow").exists()  # no local tracking store on that host
        finally:
            stack.down(print)
    print(f"scale-out test: {time.monotonic() - started:.0f} s")
