"""The whole training pipeline (profile `tiny`, fresh state dir each time) on the embedded
defaults against PostgreSQL: with no server at all (Prefect starts a temporary one, MLflow is a
SQLite file), with `make up`'s Prefect server on SQLite, and with the Prefect server and an MLflow
tracking server on a local PostgreSQL cluster (`CLIP_HAR_DB=postgres make up`). The servers are
started before the clock starts: wall time of `clip-har pipeline run` and of each stage.

Run: .venv/bin/python bench/pipeline_backends.py [--repeat 2]   (needs PostgreSQL's programs)
Writes bench/results/pipeline_backends.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

from bench.backends import _free_port  # noqa: E402 - after the path set-up above
from clip_har import postgres  # noqa: E402
from clip_har.settings import TELEMETRY_OFF, load_settings  # noqa: E402

STAGE = re.compile(r"stage times:\s+(.*)")


def pipeline(env: dict[str, str]) -> dict:
    """One `clip-har pipeline run --profile tiny`: its wall time and the stage times it prints."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "clip_har_cli.main", "pipeline", "run", "--profile", "tiny"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(out.stdout[-2000:] + out.stderr[-2000:])
    stages = {}
    if m := STAGE.search(out.stdout):
        for part in m.group(1).split(", "):
            name, sec = part.rsplit(" ", 1)
            stages[name] = float(sec.rstrip("s"))
    return {"wall_s": round(wall, 2), "stages_s": stages}


def no_server(home: Path) -> dict:
    """No stack: Prefect starts its own temporary server for the run, MLflow is the SQLite file."""
    env = {**os.environ, **TELEMETRY_OFF, "CLIP_HAR_HOME": str(home), "PREFECT_HOME": str(home / "prefect")}
    env.pop("PREFECT_API_URL", None)
    return pipeline(env)


def on_stack(home: Path, db: str) -> dict:
    """`make up`'s servers under `home` (started, then stopped by PID), then the run: the Prefect
    server on SQLite and MLflow's SQLite file (db=sqlite), or a PostgreSQL cluster with the
    Prefect server and an MLflow tracking server on it (db=postgres)."""
    from clip_har_cli import stack

    ports = {"CLIP_HAR_PREFECT_PORT": str(_free_port()), "CLIP_HAR_MLFLOW_PORT": str(_free_port())}
    base = {"CLIP_HAR_HOME": str(home), "PREFECT_HOME": str(home / "prefect"), "CLIP_HAR_DB": db, **ports}
    saved = {k: os.environ.get(k) for k in [*base, "PREFECT_API_URL"]}
    os.environ.update(base)
    os.environ.pop("PREFECT_API_URL", None)
    try:
        settings = load_settings()
        state = settings.state
        server = postgres.ensure(settings)  # None on SQLite
        stack.start_prefect_server(settings, state, server)
        if server is not None:
            stack.start_mlflow_server(settings, state, server, stack._child_env(TELEMETRY_OFF))
        env = {**stack._child_env(TELEMETRY_OFF), "PREFECT_API_URL": settings.prefect_api}
        return pipeline(env)
    finally:
        stack.down(lambda _: None)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args(argv)
    kinds = {
        "sqlite, no server": no_server,
        "sqlite, stack": lambda home: on_stack(home, "sqlite"),
        "postgres, stack": lambda home: on_stack(home, "postgres"),
    }
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        os.chmod(tmp, 0o755)  # as root, the cluster runs as `postgres`, which must reach it
        for i in range(args.repeat):  # interleaved, so machine load hits all alike
            for j, (kind, run) in enumerate(kinds.items()):
                runs[kind].append(run(Path(tmp) / f"{j}-{i}"))
    median = {k: statistics.median(r["wall_s"] for r in v) for k, v in runs.items()}
    result = {
        "profile": "tiny",
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_1min_at_end": round(os.getloadavg()[0], 2),
        "median_wall_s": median,
        "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pipeline_backends.json").write_text(json.dumps(result, indent=2) + "\n")
    stages = sorted({s for v in runs.values() for r in v for s in r["stages_s"]})
    print(f"{'seconds (median)':<20}" + "".join(f"{k:>19}" for k in kinds))
    print(f"{'pipeline wall':<20}" + "".join(f"{median[k]:>19.1f}" for k in kinds))
    for stage in stages:
        vals = [statistics.median(r["stages_s"].get(stage, 0.0) for r in runs[k]) for k in kinds]
        print(f"{stage:<20}" + "".join(f"{v:>19.1f}" for v in vals))
    return result


if __name__ == "__main__":
    main()
