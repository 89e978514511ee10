"""The model card: what a person sees about the served model in the web app (GET /model/card):
version, backend, held-out metrics and confusion matrix, data version and lineage, the latest
drift verdict with its Evidently report, and where the Prefect and MLflow UIs are."""

from __future__ import annotations

import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

from clip_har.metrics import EvalReport
from clip_har.monitoring.monitor import last_verdict

EVAL_REPORT_FILE = "eval_report.json"  # in a stored model's folder: its held-out report (packaging copies it)
DRIFT_REPORT_ROUTE = "/drift/report"  # where the service serves the latest Evidently report


def held_out(model_dir: Path) -> tuple[dict | None, dict | None]:
    """(metrics, confusion) from the model's held-out report; (None, None) for a model stored
    without one (packaged before the card existed, or by hand)."""
    path = Path(model_dir) / EVAL_REPORT_FILE
    if not path.is_file():
        return None, None
    report = EvalReport.load(path)
    metrics = {k: v for k, v in report.to_dict().items() if k != "confusion"}
    return metrics, {"labels": list(report.per_class), "matrix": report.confusion}


def latest_report(reports_dir: Path) -> Path | None:
    """The Evidently HTML report of the last drift check that reached a verdict."""
    verdict = (last_verdict(reports_dir) or {}).get("verdict")
    html = Path(verdict).with_suffix(".html") if verdict else None
    return html if html is not None and html.is_file() else None


def drift_summary(reports_dir: Path) -> dict | None:
    """The latest drift check: status, window, scores and thresholds; `report_url` when its
    Evidently report is on this host."""
    verdict = last_verdict(reports_dir)
    if verdict is None:
        return None
    keep = ("status", "since", "until", "n_current", "n_reference", "scores", "drifted", "thresholds")
    found = {k: verdict[k] for k in keep if k in verdict}
    return {**found, "report_url": DRIFT_REPORT_ROUTE if latest_report(reports_dir) else None}


class UiLinks:
    """The Prefect and MLflow UIs, each only while it answers (the stack may be down): probed
    with a short timeout and remembered for `ttl_s`, so the card never waits on a dead host."""

    def __init__(self, prefect: str, mlflow: str, timeout_s: float = 0.5, ttl_s: float = 15.0) -> None:
        self._probes = {"prefect": (prefect, f"{prefect}/api/health"), "mlflow": (mlflow, f"{mlflow}/health")}
        self.timeout_s, self.ttl_s = timeout_s, ttl_s
        self._seen: dict[str, tuple[float, bool]] = {}

    def _up(self, name: str) -> bool:
        at, up = self._seen.get(name, (float("-inf"), False))
        if time.monotonic() - at > self.ttl_s:
            try:
                with urllib.request.urlopen(self._probes[name][1], timeout=self.timeout_s) as r:
                    up = r.status == 200
            except urllib.error.HTTPError as exc:  # a Prefect server behind basic auth is up
                up = exc.code in (401, 403)
            except (OSError, ValueError):
                up = False
            self._seen[name] = (time.monotonic(), up)
        return up

    def get(self, mlflow_run_id: str | None) -> dict[str, str | None]:
        """Blocking (probes): call it off the event loop."""
        prefect, mlflow = (self._probes[n][0] if self._up(n) else None for n in ("prefect", "mlflow"))
        run = f"{mlflow}/#/runs/{mlflow_run_id}" if mlflow and mlflow_run_id else None
        return {"prefect": prefect, "mlflow": mlflow, "mlflow_run": run}


def model_card(
    tag: str,
    backend: str,
    classes: list[str],
    model_dir: Path,
    metadata: dict[str, str],
    reports_dir: Path,
    links: dict[str, str | None],
) -> dict:
    """The card of a stored model; every part a model or host lacks is None."""
    metrics, confusion = held_out(model_dir)
    lineage = {k: v for k, v in metadata.items() if k != "classes"}  # the labels have a field of their own
    return {
        "model_version": tag,
        "backend": backend,
        "labels": classes,
        "registry_version": metadata.get("registry_version") or None,
        "data_version": metadata.get("data_version") or None,
        "lineage": lineage,
        "metrics": metrics,
        "confusion": confusion,
        "drift": drift_summary(reports_dir),
        "links": links,
    }


def write_eval_report(report: Path, model_dir: Path) -> None:
    """Put a held-out report beside a stored model (checked: it must load as one)."""
    EvalReport.load(report)
    shutil.copyfile(report, Path(model_dir) / EVAL_REPORT_FILE)
