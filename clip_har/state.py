"""Where all local state lives: one directory (default ./.clip-har, env CLIP_HAR_HOME).

Nothing here runs at import time; callers ask for paths and call `apply_env()` explicitly
before they import Prefect, BentoML or MLflow, so those libraries write under the state dir.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "CLIP_HAR_HOME"

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


@dataclass(frozen=True)
class StateDir:
    root: Path

    @classmethod
    def from_env(cls, root: str | Path | None = None) -> StateDir:
        return cls(Path(root or os.environ.get(ENV_VAR) or ".clip-har").resolve())

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
        return f"sqlite:///{self.mlflow_db}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlflow" / "artifacts"

    @property
    def data_registry(self) -> Path:
        """The git+DVC repository holding every data version (DVC's data-registry pattern)."""
        return self.root / "data-registry"

    @property
    def dvc_remote(self) -> Path:
        return self.root / "dvc-remote"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def env(self) -> dict[str, str]:
        return {
            ENV_VAR: str(self.root),
            "PREFECT_HOME": str(self.prefect_home),
            "BENTOML_HOME": str(self.bentoml_home),
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            "MLFLOW_REGISTRY_URI": self.mlflow_uri,
            **TELEMETRY_OFF,
        }

    def apply_env(self, override: bool = False) -> None:
        """Export the state-dir environment; existing values win unless `override`."""
        for key, value in self.env().items():
            if override or key not in os.environ:
                os.environ[key] = value
        self.root.mkdir(parents=True, exist_ok=True)
