"""The training pipeline's result: what `clip-har pipeline run` prints and the flow returns."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from urllib.parse import quote

from clip_har.data.versioning import DataVersion
from clip_har.gate import GateDecision
from clip_har.pipeline.evaluate import EvalSummary
from clip_har.pipeline.rundir import EVAL
from clip_har.registry import Registration


def summary(reg: Registration, ev: EvalSummary, decision: GateDecision, data_version: DataVersion) -> dict:
    return {
        "registration": reg.to_dict(),
        "accuracy": ev.accuracy,
        "macro_f1": ev.macro_f1,
        "gate": decision.to_dict(),
        "data_version": data_version.to_dict(),
        "eval": asdict(ev) | {"markdown": None},
    }


def links_markdown(mlflow_ui: str, experiment_id: str, run_id: str, drift: dict | None) -> str:
    """Where to look next, for the flow run's page: the MLflow run, its confusion matrix (shown
    inline, fetched from the MLflow UI's server) and the latest drift verdict with its Evidently
    report. `mlflow_ui`: the MLflow UI's address (the tracking server, or `make up`'s UI)."""
    run = f"{mlflow_ui}/#/experiments/{experiment_id}/runs/{run_id}"
    png = f"{mlflow_ui}/get-artifact?path={quote(f'{EVAL}/confusion.png', safe='')}&run_uuid={run_id}"
    lines = [
        f"**MLflow run**: [{run_id}]({run})",
        f"**Confusion matrix** ([in the run]({run}/artifacts/{EVAL}/confusion.png)):",
        "",
        f"![confusion matrix]({png})",
        "",
    ]
    if drift is None:
        lines.append("**Drift**: no check yet (the drift-monitor deployment runs hourly).")
    else:
        report = drift.get("report_html")
        verdict = drift.get("status", "unknown")
        where = f"[{Path(report).name}]({Path(report).resolve().as_uri()})" if report else "no report"
        lines.append(f"**Latest drift check**: {verdict}; Evidently report: {where} (`{report or ''}`)")
    return "\n".join(lines)
