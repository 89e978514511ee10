"""record-lineage: complete the lineage (… → ONNX sha256 → Bento tags) of a packaged model in the
run dir, its MLflow run and its registry version."""

from __future__ import annotations

import json

from clip_har.pipeline.rundir import RunDir
from clip_har.registry import Registration
from clip_har.settings import StateDir
from clip_har.tracking import client
from clip_har.train.trainer import TrainResult


def run(
    state: StateDir, trained: TrainResult, reg: Registration, run_dir: RunDir, tags: dict[str, str]
) -> dict[str, str]:
    c = client(state.mlflow_uri)
    lineage = {**json.loads(run_dir.lineage.read_text()), "registry_version": reg.version, **tags}
    run_dir.lineage.write_text(json.dumps(lineage, indent=2))
    c.log_artifact(trained.run_id, str(run_dir.lineage))
    for key, value in tags.items():
        c.set_model_version_tag(reg.model_name, reg.version, f"lineage.{key}", value)
    return lineage
