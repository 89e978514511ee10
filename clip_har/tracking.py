"""MLflow helpers: explicit URIs (never the cwd's ./mlruns) and run lineage values.

A tracking URI is the SQLite file of the state dir (the default) or a tracking server's
http(s) address (StateDir.mlflow_uri); through a server, runs and models travel over HTTP.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from clip_har.state import env_name

if TYPE_CHECKING:  # imported where used: training imports this module on machines without MLflow or httpx
    from mlflow.tracking import MlflowClient

_answered: set[str] = set()  # servers this process has reached


class TrackingServerDown(ConnectionError):
    """No MLflow server answers at the tracking URI; the message is one line."""


def is_server(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))


def client(tracking_uri: str) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    if is_server(tracking_uri):
        check_server(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def check_server(url: str, timeout: float = 10.0) -> None:
    """TrackingServerDown unless the server at `url` answers (once per process): MLflow's own
    client retries a refused connection for minutes before it says anything."""
    if url in _answered:
        return
    import httpx

    try:
        httpx.get(f"{url}/health", timeout=timeout)  # any answer will do: a proxy may want a login
    except httpx.HTTPError as exc:
        raise TrackingServerDown(
            f"no MLflow server answers at {url} ({type(exc).__name__}): start the stack (`clip-har up`) "
            f"or check {env_name('mlflow_server')}"
        ) from None
    _answered.add(url)


def ensure_experiment(c: MlflowClient, name: str, artifact_root: Path) -> str:
    """The experiment id, creating it if needed: with `artifact_root` as its artifact location in
    the SQLite store; through a server, with the server's own (proxied, `mlflow-artifacts:`), as a
    local folder would be on one machine's disk only."""
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    if is_server(c.tracking_uri):
        return c.create_experiment(name)
    artifact_root.mkdir(parents=True, exist_ok=True)
    return c.create_experiment(name, artifact_location=artifact_root.resolve().as_uri())


def create_run(c: MlflowClient, experiment_id: str, tags: dict[str, str]) -> str:
    """A new run's id, with MLflow's context tags (user, source) as Lightning's logger sets them."""
    from mlflow.tracking.context.registry import resolve_tags

    return c.create_run(experiment_id, tags=resolve_tags(tags)).info.run_id


def git_sha(cwd: Path | None = None) -> str:
    """The project's commit, or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def leaves(d: dict, prefix: str = "") -> dict[str, object]:
    """Nested config → flat `a.b` keys with their leaf values."""
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(leaves(v, f"{key}."))
        else:
            out[key] = v
    return out


def flatten(d: dict) -> dict[str, str]:
    """Flat `a.b` keys with string values (MLflow params are strings of bounded length)."""
    return {k: str(v)[:500] for k, v in leaves(d).items()}
