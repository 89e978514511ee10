"""MLflow helpers: explicit URIs (never the cwd's ./mlruns) and run lineage values."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mlflow.tracking import MlflowClient


def client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def ensure_experiment(c: MlflowClient, name: str, artifact_root: Path) -> str:
    """The experiment id, creating it with an explicit artifact location if needed."""
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
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
