"""What the training flow run's page links to: the MLflow run, its confusion matrix, the drift
check with its Evidently report."""

from __future__ import annotations

from pathlib import Path

from clip_har.pipeline.summary import links_markdown


def test_links_name_the_run_its_confusion_matrix_and_the_drift_report(tmp_path: Path) -> None:
    report = tmp_path / "drift-1700000000.html"
    md = links_markdown("http://mlflow:5000", "3", "abc123", {"status": "drift", "report_html": str(report)})
    assert "[abc123](http://mlflow:5000/#/experiments/3/runs/abc123)" in md
    # the image is fetched from the MLflow server; the path is one query value
    assert "![confusion matrix](http://mlflow:5000/get-artifact?path=eval%2Fconfusion.png&run_uuid=abc123)" in md
    assert "drift" in md and f"({report.as_uri()})" in md
    assert "no check yet" in links_markdown("http://127.0.0.1:5000", "1", "r", None)
