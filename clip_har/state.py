"""Where the local state of an install lives: every path derived from one root (default
`.clip-har/`), and the environment a process using them starts with (PREFECT_HOME, BENTOML_HOME,
MLflow URIs, telemetry off). `Settings.state` (clip_har.settings) builds it from the settings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_PREFIX = "CLIP_HAR_"

# Telemetry off everywhere (the machine is offline anyway; this keeps libraries from trying).
TELEMETRY_OFF = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "BENTOML_DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def env_name(field: str) -> str:
    """The environment variable of a setting: `home` → CLIP_HAR_HOME."""
    return f"{ENV_PREFIX}{field.upper()}"


@dataclass(frozen=True)
class StateDir:
    """Every path of a local install, derived from one root; monitoring folders may live elsewhere."""

    root: Path
    predictions_dir: Path | None = None  # CLIP_HAR_PREDICTION_LOG
    review_dir: Path | None = None  # CLIP_HAR_REVIEW_DIR
    reports_dir: Path | None = None  # CLIP_HAR_REPORTS_DIR
    mlflow_server: str | None = None  # Settings.tracking_server: MLflow over HTTP instead of SQLite
    dvc_remote_url: str | None = None  # CLIP_HAR_DVC_REMOTE: a URL or an absolute folder

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    @property
    def bentoml_home(self) -> Path:
        return self.root / "bentoml"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow" / "mlflow.db"

    @property
    def mlflow_uri(self) -> str:
        """The tracking (and registry) URI of every MLflow client."""
        return self.mlflow_server or f"sqlite:///{self.mlflow_db}"

    @property
    def has_registry(self) -> bool:
        """Whether there is a tracking store to ask. A SQLite client would create the file: code
        that only looks (status, champion lookups) asks this first."""
        return self.mlflow_server is not None or self.mlflow_db.is_file()

    @property
    def mlflow_artifacts(self) -> Path:
        """Artifacts of runs tracked in the SQLite file (a server keeps its own)."""
        return self.root / "mlflow" / "artifacts"

    @property
    def mlflow_served_artifacts(self) -> Path:
        """Where `up`'s MLflow server on PostgreSQL stores the artifacts it proxies."""
        return self.root / "mlflow-artifacts"

    @property
    def postgres(self) -> Path:
        """The local PostgreSQL cluster (CLIP_HAR_DB=postgres): data, sockets, log, port."""
        return self.root / "postgres"

    @property
    def data_registry(self) -> Path:
        """The git+DVC repository holding every data version (DVC's data-registry pattern)."""
        return self.root / "data-registry"

    @property
    def dvc_remote(self) -> str:
        """The data registry's DVC remote: a URL, or a folder (absolute)."""
        return self.dvc_remote_url or str(self.root / "dvc-remote")

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def predictions(self) -> Path:
        """The prediction log the service writes and the drift monitor reads."""
        return self.predictions_dir or self.root / "predictions"

    @property
    def review(self) -> Path:
        return self.review_dir or self.root / "review"

    @property
    def reports(self) -> Path:
        """Drift verdicts and reports, ingest gate results."""
        return self.reports_dir or self.root / "reports"

    @property
    def rollout(self) -> Path:
        """Shadow rollouts: the service's per-request shadow log and the rollout's state file."""
        return self.root / "rollout"

    @property
    def stack(self) -> Path:
        """PIDs and logs of `clip-har up`."""
        return self.root / "stack"

    @property
    def loop(self) -> Path:
        return self.root / "loop"

    @property
    def data_lock(self) -> Path:
        """Held while a stage writes the data registry (datasets, git, DVC)."""
        return self.root / "locks" / "data-registry.lock"

    @property
    def model_lock(self) -> Path:
        """Held while a run checks the champion and registers (the alias's compare-and-set)."""
        return self.root / "locks" / "model-registry.lock"

    def env(self) -> dict[str, str]:
        """The environment of a process using this state dir. Our own paths go out resolved: the
        service, the worker and the CLI run in different working directories."""
        folders = {
            "prediction_log": self.predictions_dir,
            "review_dir": self.review_dir,
            "reports_dir": self.reports_dir,
            "dvc_remote": self.dvc_remote_url,
        }
        return {
            env_name("home"): str(self.root),
            **{env_name(k): str(v) for k, v in folders.items() if v is not None},
            "PREFECT_HOME": str(self.prefect_home),
            "BENTOML_HOME": str(self.bentoml_home),
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            "MLFLOW_REGISTRY_URI": self.mlflow_uri,
            **TELEMETRY_OFF,
        }

    def apply_env(self, override: bool = False, extra: dict[str, str] | None = None) -> None:
        """Export the state-dir environment (and `extra`). Values already set win unless
        `override`, except our own CLIP_HAR_* paths, which are the same values resolved."""
        for key, value in {**self.env(), **(extra or {})}.items():
            if override or key not in os.environ or key.startswith(ENV_PREFIX):
                os.environ[key] = value
        self.root.mkdir(parents=True, exist_ok=True)
