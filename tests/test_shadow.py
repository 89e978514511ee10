"""Shadow scoring, feedback and the model card on the real service (`bentoml serve` on loopback):
a challenger in shadow scores every request and never changes an answer; a person's correction
lands in the review queue with the chosen label; the card says what the served model is."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import test_service
from test_service import ADMIN, Server, Store, _post, _save_to_store, running_server

from clip_har.export.onnx_export import export_untrained
from clip_har.metrics import compute_metrics

pytestmark = pytest.mark.integration
jpgs = test_service.jpgs  # the module fixture: the tiny data set's photos as JPEG bytes


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """The champion (32 px, with its held-out report) and a challenger of the demo architecture
    (64 px, other embeddings): shadow scoring must prepare the pixels again for it."""
    tmp = tmp_path_factory.mktemp("shadow-store")
    env = {**os.environ, "BENTOML_HOME": str(tmp / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    champion = export_untrained(tmp / "onnx0", 0)
    classes = json.loads((champion / "onnx_meta.json").read_text())["model"]["classes"]
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(len(classes)), 60)
    report = compute_metrics(probs, rng.integers(0, len(classes), 60), classes).save(tmp / "report.json")
    lineage = {"data_version": "tiny-v1", "mlflow_run_id": "r0", "registry_version": "1"}
    challenger = export_untrained(tmp / "onnx1", 1, overrides=("model.preset=demo",))
    tags = (
        _save_to_store(champion, lineage, env, eval_report=report),
        _save_to_store(challenger, {"data_version": "tiny-v2"}, env),
    )
    return Store(tmp / "bentoml", tags, "")


@pytest.fixture(scope="module")
def server(store: Store, tmp_path_factory: pytest.TempPathFactory, free_port: Callable[[], int]) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("shadow-srv")
    nothing = str(free_port())  # no Prefect or MLflow UI answers there: the card links to neither
    env = {"CLIP_HAR_HOME": str(root / "state"), "CLIP_HAR_REPORTS_DIR": str(root / "reports")}
    env |= {"CLIP_HAR_PREFECT_PORT": nothing, "CLIP_HAR_MLFLOW_PORT": nothing, "CLIP_HAR_MLFLOW_SERVER": ""}
    with running_server(store, root, free_port(), env=env) as srv:
        yield srv


def _shadow_records(root: Path) -> list[dict]:
    return [
        json.loads(line)
        for p in (root / "state" / "rollout" / "shadow").glob("log-*.jsonl")
        for line in p.read_text().splitlines()
    ]


def test_admin_shadow_refusals(server: Server) -> None:
    url = f"{server.url}/admin/shadow"
    champion, challenger = server.tags
    assert httpx.post(url, json={"model": challenger}, timeout=30).status_code == 403  # no token
    body = json.dumps({"model": challenger})  # JSON, sent as a cross-site form could: refused even with the token
    r = httpx.post(url, content=body, headers={**ADMIN, "content-type": "text/plain"}, timeout=30)
    assert r.status_code == 415 and "JSON" in r.json()["error"]
    r = httpx.post(url, json={"model": "clip-har:nope"}, headers=ADMIN, timeout=30)
    assert r.status_code == 404 and "not in the BentoML model store" in r.json()["error"]
    r = httpx.post(url, json={"model": champion}, headers=ADMIN, timeout=30)
    assert r.status_code == 400 and "is the served model" in r.json()["error"]
    assert httpx.get(f"{server.url}/shadow", timeout=30).json()["challenger"] is None  # nothing moved


def test_feedback_puts_the_image_in_the_review_queue_with_the_chosen_label(server: Server, jpgs: list[bytes]) -> None:
    labels = httpx.get(f"{server.url}/model", timeout=30).json()["labels"]
    image = [("image", ("me.jpg", jpgs[0]))]
    r = _post(f"{server.url}/feedback", image, {"label": labels[3], "predicted": labels[0], "model_version": "x"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"] == labels[3] and body["state"] == "pending" and body["model_predicted"] in labels
    item = json.loads((server.review / "pending" / f"{body['id']}.json").read_text())  # for a reviewer to confirm
    assert item["label"] == labels[3] and item["reason"] == "feedback" and item["model_version"] == server.tags[0]
    assert (server.review / "pending" / f"{body['id']}{item['suffix']}").read_bytes() == jpgs[0]
    for files, data, needle in (
        (image, {"label": "juggling"}, "unknown label"),
        (image, {}, "label"),
        ([("image", ("a.txt", b"hello"))], {"label": labels[0]}, "decode"),
    ):
        r = _post(f"{server.url}/feedback", files, data)
        assert r.status_code == 400 and needle in r.json()["error"], (data, r.text)
    kept = [json.loads(p.read_text()) for p in (server.review / "pending").glob("*.json")]
    assert [i["id"] for i in kept if i["reason"] == "feedback"] == [body["id"]]  # a refusal keeps nothing


def test_model_card(server: Server) -> None:
    """Version, backend, held-out metrics and confusion matrix, lineage; no drift check, shadow or
    stack yet (tests/test_ui.py runs a real drift check and follows the card's report link)."""
    card = httpx.get(f"{server.url}/model/card", timeout=30).json()
    assert card["model_version"] == server.tags[0] and card["backend"] == "onnx" and card["registry_version"] == "1"
    assert card["data_version"] == "tiny-v1" and card["lineage"]["mlflow_run_id"] == "r0"
    assert card["metrics"]["n"] == 60 and 0 <= card["metrics"]["macro_f1"] <= 1
    matrix = np.asarray(card["confusion"]["matrix"])
    assert card["confusion"]["labels"] == card["labels"] and matrix.shape == (15, 15) and matrix.sum() == 60
    assert card["links"] == {"prefect": None, "mlflow": None, "mlflow_run": None}  # no stack up here
    assert card["drift"] is None and card["shadow"] == {"challenger": None, "requests": 0, "agreement": None}
    r = httpx.get(f"{server.url}/drift/report", timeout=30)
    assert r.status_code == 404 and "no drift report yet" in r.json()["error"]


def test_a_challenger_in_shadow_never_changes_an_answer(
    server: Server, tmp_path: Path, write_video: Callable[..., Path], tiny_data_master: Path, jpgs: list[bytes]
) -> None:
    """Answers with and without a challenger in shadow are the same; the challenger scored every
    request, with its own pixels (64 px where the champion takes 32), and what the shadow log
    says it predicted is what it answers once it serves. Serving it ends the shadowing."""
    from PIL import Image

    champion, challenger = server.tags
    root = server.log.parent
    images = [("images", (f"{i}.jpg", data)) for i, data in enumerate(jpgs)]
    frames = [Image.open(p).convert("RGB") for p in sorted((tiny_data_master / "images").rglob("*.jpg"))[:4]]
    video = [("video", ("v.mp4", write_video(tmp_path / "v.mp4", frames, fps=2).read_bytes()))]

    def answers() -> list[dict]:
        out = [_post(f"{server.url}/predict", [image]) for image in images]
        out.append(_post(f"{server.url}/predict_video", video, {"fps": "1"}))
        assert [r.status_code for r in out] == [200] * len(out), [r.text for r in out]
        return [r.json() for r in out]

    before = answers()
    r = httpx.post(f"{server.url}/admin/shadow", json={"model": challenger}, headers=ADMIN, timeout=120)
    assert r.status_code == 200 and r.json()["challenger"] == challenger and r.json()["champion"] == champion, r.text
    time.sleep(1.1)  # every HTTP worker re-reads which model shadows at most once a second
    during = answers()
    assert during == before  # same model, same labels, same scores

    deadline = time.monotonic() + 60
    while (
        len([s for s in _shadow_records(root) if s["status"] == "scored"]) < len(during) and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    status = httpx.get(f"{server.url}/shadow", timeout=30).json()
    assert status["champion"] == champion and status["challenger"] == challenger
    assert status["requests"] == len(during) and status["skipped"] == 0 and status["errors"] == 0
    n_frames = len(during[-1]["frames"])
    assert status["images"] == len(images) + n_frames and 0 <= status["agreement"] <= 1
    logged = {s["request_id"]: s for s in _shadow_records(root)}
    predicts = [s for s in logged.values() if s["route"] == "/predict"]
    assert [s["champion_labels"][0] for s in sorted(predicts, key=lambda s: s["ts"])] == [
        a["results"][0]["label"] for a in during[:-1]
    ]

    r = httpx.post(f"{server.url}/admin/reload", json={"model": challenger}, headers=ADMIN, timeout=120)
    assert r.status_code == 200, r.text
    served = answers()
    assert {a["model_version"] for a in served} == {challenger}
    by_order = sorted(predicts, key=lambda s: s["ts"])
    assert [s["challenger_labels"][0] for s in by_order] == [a["results"][0]["label"] for a in served[:-1]]
    assert [s["challenger_scores"][0] for s in by_order] == pytest.approx(
        [a["results"][0]["score"] for a in served[:-1]], abs=1e-5
    )
    assert httpx.get(f"{server.url}/shadow", timeout=30).json()["challenger"] is None  # it serves now
    r = httpx.post(f"{server.url}/admin/reload", json={"model": champion}, headers=ADMIN, timeout=120)
    assert r.status_code == 200, r.text
