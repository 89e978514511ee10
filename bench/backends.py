"""What PostgreSQL costs the pipeline, against the embedded SQLite default: N MLflow runs with one
metric each (the client on the database itself, and through an MLflow server over HTTP, the way
`CLIP_HAR_DB=postgres` runs it), N Prefect task runs in one flow and N/5 one-task flows on the
Prefect server, and how long each server takes to start on a fresh database.

Run: .venv/bin/python bench/backends.py [--n 50] [--repeat 3]   (needs PostgreSQL's programs: a
throw-away cluster runs in a temp dir). Writes bench/results/backends.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

from clip_har import postgres  # noqa: E402 - after the path set-up above
from clip_har.settings import TELEMETRY_OFF, load_settings  # noqa: E402
from clip_har_cli import stack  # noqa: E402

# one warm-up flow, then `repeat` timed rounds: an N-task flow and N/5 one-task flows
FLOWS = """
import json, os, sys, time
import httpx
from prefect import flow, task

@task
def step(i: int) -> int:
    return i

@flow(name="bench-tasks")
def tasks(n: int) -> str:
    for i in range(n):
        step(i)
    from prefect.runtime import flow_run
    return flow_run.id

@flow(name="bench-flow")
def one() -> None:
    step(0)

def recorded(run_id: str) -> int:
    body = {"flow_runs": {"id": {"any_": [run_id]}}}
    return httpx.post(os.environ["PREFECT_API_URL"] + "/task_runs/count", json=body, timeout=10).json()

n, repeat = int(sys.argv[1]), int(sys.argv[2])
tasks(1)
rounds = []
for _ in range(repeat):
    t0 = time.perf_counter(); run_id = tasks(n); t1 = time.perf_counter()
    while recorded(run_id) < n:  # Prefect 3 sends task runs as events; the server writes them
        time.sleep(0.02)
    t2 = time.perf_counter()
    for _ in range(max(1, n // 5)):
        one()
    rounds.append({"tasks_s": t1 - t0, "recorded_after_s": t2 - t1, "flows_s": time.perf_counter() - t2})
print(json.dumps(rounds))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_runs(uri: str, n: int, repeat: int, artifacts: Path | None = None) -> list[float]:
    """Seconds for n runs (create, one metric, end) per round; the first run warms the client."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    location = artifacts.as_uri() if artifacts else None  # a server picks its own
    exp = c.create_experiment(f"bench-{uuid.uuid4().hex[:8]}", artifact_location=location)
    c.set_terminated(c.create_run(exp).info.run_id)
    rounds = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for i in range(n):
            run = c.create_run(exp).info.run_id
            c.log_metric(run, "macro_f1", i / n)
            c.set_terminated(run)
        rounds.append(time.perf_counter() - t0)
    return rounds


def prefect_rounds(api: str, n: int, repeat: int, env: dict[str, str]) -> list[dict]:
    """The flows, in a client process of their own, and how long after each N-task flow
    returned the server had all N task runs in its database."""
    cmd = [sys.executable, "-c", textwrap.dedent(FLOWS), str(n), str(repeat)]
    out = subprocess.run(cmd, env={**env, "PREFECT_API_URL": api}, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def backend(kind: str, home: Path, n: int, repeat: int) -> dict:
    """One backend end to end: servers started as `clip-har up` starts them, measured, stopped."""
    os.environ.update(
        {
            "CLIP_HAR_HOME": str(home),
            "PREFECT_HOME": str(home / "prefect"),
            "CLIP_HAR_PREFECT_PORT": str(_free_port()),
            "CLIP_HAR_MLFLOW_PORT": str(_free_port()),
            **TELEMETRY_OFF,
        }
    )
    os.environ.pop("CLIP_HAR_DB", None)
    if kind == "postgres":
        os.environ["CLIP_HAR_DB"] = "postgres"
    settings = load_settings()
    state, result = settings.state, {}
    env = stack._child_env()
    try:
        t0 = time.perf_counter()
        db = postgres.ensure(settings)
        result["cluster_start_s"] = time.perf_counter() - t0 if db else None
        t0 = time.perf_counter()
        stack.start_prefect_server(settings, state, db)
        result["prefect_start_s"] = time.perf_counter() - t0
        result["prefect"] = prefect_rounds(settings.prefect_api, n, repeat, env)
        t0 = time.perf_counter()
        if db is None:  # the default: the UI reads the SQLite file that clients write themselves
            state.mlflow_db.parent.mkdir(parents=True, exist_ok=True)
            result["mlflow_direct"] = mlflow_runs(state.mlflow_uri, n, repeat, state.mlflow_artifacts)
            stack._start(state, "mlflow", stack.mlflow_command(settings, state), env)
            if not stack.wait_http(f"{settings.mlflow_url}/health", 180):
                raise RuntimeError(f"MLflow did not start; see {stack.log_path(state, 'mlflow')}")
        else:
            stack.start_mlflow_server(settings, state, db, env)
        result["mlflow_start_s"] = time.perf_counter() - t0
        if db is not None:
            os.environ.update(db.env)  # the passfile, for the client on the database itself
            result["mlflow_direct"] = mlflow_runs(db.mlflow_url, n, repeat, state.mlflow_artifacts)
        result["mlflow_http"] = mlflow_runs(settings.mlflow_url, n, repeat)
    finally:
        stack.down(lambda _: None)
    return result


def _rounded(value: object) -> object:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _row(name: str, values: dict[str, list[float]], n: int) -> str:
    cells = []
    for kind in ("sqlite", "postgres"):
        median = statistics.median(values[kind])
        cells.append(f"{median:.2f} s" + (f" ({1000 * median / n:.1f} ms each)" if n > 1 else ""))
    ratio = statistics.median(values["postgres"]) / statistics.median(values["sqlite"])
    return f"| {name} | {cells[0]} | {cells[1]} | {ratio:.2f}x |"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50, help="MLflow runs and Prefect task runs per round")
    ap.add_argument("--repeat", type=int, default=3, help="timed rounds (the table shows medians)")
    args = ap.parse_args(argv)
    postgres.find_programs()  # PostgresError (one line) before anything starts
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        if os.geteuid() == 0:
            home.chmod(0o711)  # the cluster runs as `postgres`, which must reach its folder
        raw = {kind: backend(kind, home / kind, args.n, args.repeat) for kind in ("sqlite", "postgres")}
    result = {
        "n": args.n,
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_1min_at_end": round(os.getloadavg()[0], 2),
        "results": raw,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "backends.json").write_text(json.dumps(_rounded(result), indent=2) + "\n")

    def series(key: str, field: str | None = None) -> dict[str, list[float]]:
        return {k: [r[field] for r in v[key]] if field else v[key] for k, v in raw.items()}

    n, flows = args.n, max(1, args.n // 5)
    print(f"N = {n}, median of {args.repeat} rounds (per-item time in brackets)")
    print("| what | SQLite | PostgreSQL | PG / SQLite |")
    print("|---|---|---|---|")
    print(_row(f"{n} MLflow runs + metric, client on the database", series("mlflow_direct"), n))
    print(_row(f"{n} MLflow runs + metric, through an MLflow server (HTTP)", series("mlflow_http"), n))
    print(_row(f"flow with {n} tasks (client wall time)", series("prefect", "tasks_s"), n))
    print(_row(f"{n} task runs recorded after the flow returned", series("prefect", "recorded_after_s"), n))
    print(_row(f"{flows} one-task flows", series("prefect", "flows_s"), flows))
    for what in ("prefect_start_s", "mlflow_start_s"):
        start = {k: [v[what]] for k, v in raw.items()}
        print(_row(f"{what.split('_')[0]} server start, fresh database", start, 1))
    print(f"local cluster: initdb + start + databases {raw['postgres']['cluster_start_s']:.1f} s")
    return result


if __name__ == "__main__":
    main()
