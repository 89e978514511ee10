"""Shadow scoring's bookkeeping and the model card, as library calls: which model shadows, the
per-request log several processes write, its summary, and the card's parts."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from clip_har.metrics import compute_metrics
from clip_har.serving.card import UiLinks, drift_summary, latest_report, model_card
from clip_har.serving.shadow import ShadowLog, ShadowWatch, compare, read_current, summarize, write_current

CLASSES = ["a", "b", "c"]


def test_which_model_shadows_survives_a_restart_and_is_seen_within_a_second(tmp_path: Path) -> None:
    assert read_current(tmp_path).challenger is None
    watch = ShadowWatch(tmp_path, ttl_s=3600)
    assert watch.current().challenger is None
    started = write_current(tmp_path, "clip-har:b")
    assert read_current(tmp_path) == started and started.since is not None
    assert watch.current().challenger is None  # cached until the ttl or an invalidate
    watch.invalidate()
    assert watch.current().challenger == "clip-har:b"
    (tmp_path / "current.json").write_text("{not json")
    watch.invalidate()
    assert watch.current().challenger is None  # unreadable: shadow nothing
    assert write_current(tmp_path, None).challenger is None


def test_summary_counts_the_current_challenger_since_it_started(tmp_path: Path) -> None:
    champion = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    challenger = np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1]])
    scores = compare(champion, CLASSES, challenger, CLASSES)
    assert (
        scores["agree"] == 1 and scores["champion_labels"] == ["a", "b"] and scores["challenger_labels"] == ["a", "a"]
    )
    old = ShadowLog(tmp_path)
    old.append({"challenger": "clip-har:b", "status": "scored", **scores})  # before it (re)started: not counted
    shadowing = write_current(tmp_path, "clip-har:b")
    log = ShadowLog(tmp_path)
    for record in (
        {"challenger": "clip-har:b", "status": "scored", **scores},
        {"challenger": "clip-har:b", "status": "scored", **compare(champion[:1], CLASSES, challenger[:1], CLASSES)},
        {"challenger": "clip-har:b", "status": "skipped", "why": "busy"},
        {"challenger": "clip-har:b", "status": "error", "why": "x"},
        {"challenger": "clip-har:other", "status": "scored", **scores},
    ):
        log.append(record)
    with open(tmp_path / f"log-{os.getpid() + 1}.jsonl", "a") as f:  # another worker's, cut short by a crash
        f.write('{"challenger": "clip-har:b", "sta')
    got = summarize(tmp_path, shadowing)
    assert got["requests"] == 2 and got["images"] == 3 and got["agreement"] == 2 / 3
    assert got["skipped"] == 1 and got["errors"] == 1
    assert np.isclose(got["champion_confidence"], (0.7 + 0.8 + 0.7) / 3)
    assert summarize(tmp_path, read_current(tmp_path / "none"))["requests"] == 0


def test_a_log_that_cannot_be_written_loses_the_line_not_the_request(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    log = ShadowLog(tmp_path / "file" / "sub")  # a folder under a file: every write fails
    log.append({"status": "scored"})
    assert log.lost == 1


def test_card_parts(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    card = model_card("m:1", "onnx", CLASSES, model, {"data_version": "d1", "classes": "[]"}, tmp_path / "r", {})
    assert card["metrics"] is None and card["confusion"] is None and card["drift"] is None
    assert card["lineage"] == {"data_version": "d1"} and card["registry_version"] is None
    report = compute_metrics(np.eye(3)[[0, 1, 2, 2]], np.array([0, 1, 2, 1]), CLASSES)
    report.save(model / "eval_report.json")
    card = model_card("m:1", "onnx", CLASSES, model, {}, tmp_path / "r", {})
    assert card["metrics"]["n"] == 4 and "confusion" not in card["metrics"]
    assert card["confusion"] == {"labels": CLASSES, "matrix": [[1, 0, 0], [0, 1, 1], [0, 0, 1]]}
    reports = tmp_path / "r"
    reports.mkdir()
    verdict = reports / "drift-1.json"
    verdict.write_text(json.dumps({"status": "drift", "scores": {"prediction": 0.3}, "report_html": "x"}))
    (reports / "drift_cursor.json").write_text(
        json.dumps({"since": 0, "until": 1, "status": "drift", "verdict": str(verdict)})
    )
    assert drift_summary(reports)["report_url"] is None and latest_report(reports) is None  # no HTML beside it
    verdict.with_suffix(".html").write_text("<html></html>")
    assert drift_summary(reports) == {
        "status": "drift",
        "since": 0,
        "until": 1,
        "scores": {"prediction": 0.3},
        "report_url": "/drift/report",
    }


def test_ui_links_only_while_the_ui_answers() -> None:
    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path in ("/api/health", "/health") else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        up = f"http://127.0.0.1:{server.server_address[1]}"
        links = UiLinks(prefect=up, mlflow="http://127.0.0.1:9", ttl_s=0).get("run1")
        assert links == {"prefect": up, "mlflow": None, "mlflow_run": None}
        assert UiLinks(prefect=up, mlflow=up, ttl_s=0).get("run1")["mlflow_run"] == f"{up}/#/runs/run1"
    finally:
        server.shutdown()
        server.server_close()
