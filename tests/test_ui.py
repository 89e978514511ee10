"""The web app at /ui/ in headless Chromium (Debian's, driven by Playwright) against a real
`bentoml serve`: what a person does on the page reaches the service and its answer is shown.
One server, one browser and one page for the module; the tests share the page and run in file
order (the photo uploaded first is the one later tests classify, explain and correct; the model
card's tests come last, when there is traffic to check for drift and to score in shadow)."""

from __future__ import annotations

import base64
import io
import json
import os
import time
from collections.abc import Callable, Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import test_service
from PIL import Image
from test_service import ADMIN, Server, Store, _save_to_store, running_server

from clip_har.export.onnx_export import export_untrained
from clip_har.metrics import compute_metrics

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (`make test` installs it where it can)
if not CHROMIUM.exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import Error as PlaywrightError  # noqa: E402  (after the skip: the dev extra)
from playwright.sync_api import Locator, Page, expect, sync_playwright  # noqa: E402

pytestmark = pytest.mark.integration
jpgs = test_service.jpgs
TIMEOUT_MS = 30_000  # per step: a busy 2-core machine runs the service and the browser together
# a fake camera: the snapshot path runs without a device, and the browser asks no permission
CHROMIUM_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@pytest.fixture(scope="module")
def ui_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """The served model (the demo architecture, untrained) with its PyTorch weights (/explain
    needs them), a held-out report and a registry version; and a tiny challenger to shadow it."""
    tmp = tmp_path_factory.mktemp("ui-store")
    env = {**os.environ, "BENTOML_HOME": str(tmp / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    onnx = export_untrained(tmp / "onnx", 3, overrides=("model.preset=demo",))
    classes = json.loads((onnx / "onnx_meta.json").read_text())["model"]["classes"]
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(len(classes)), 60)
    report = compute_metrics(probs, rng.integers(0, len(classes), 60), classes).save(tmp / "report.json")
    lineage = {"data_version": "demo-v1", "mlflow_run_id": "r1", "registry_version": "3"}
    served = _save_to_store(onnx, lineage, env, model_dir=onnx.with_name(onnx.name + "-torch"), eval_report=report)
    challenger = _save_to_store(export_untrained(tmp / "onnx4", 4), {"data_version": "tiny-v4"}, env)
    return Store(tmp / "bentoml", (served, challenger), "")


@pytest.fixture(scope="module")
def ui_server(
    ui_store: Store, tmp_path_factory: pytest.TempPathFactory, free_port: Callable[[], int]
) -> Iterator[Server]:
    """Its drift verdicts and shadow state under the test's folder; the Prefect and MLflow UIs
    on a port where nothing answers (the card shows their links only while they do)."""
    root = tmp_path_factory.mktemp("ui")
    nothing = str(free_port())
    env = {
        "CLIP_HAR_HOME": str(root / "state"),
        "CLIP_HAR_REPORTS_DIR": str(root / "reports"),
        "CLIP_HAR_PREFECT_PORT": nothing,
        "CLIP_HAR_MLFLOW_PORT": nothing,
        "CLIP_HAR_MLFLOW_SERVER": "",  # empty: ignored, so not one set in the environment
    }
    with running_server(ui_store, root, free_port(), env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def requested() -> list[str]:
    """Every URL the page asked for, and every error it raised (as `pageerror: ...`)."""
    return []


@pytest.fixture(scope="module")
def page(ui_server: Server, requested: list[str]) -> Iterator[Page]:
    with sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        except PlaywrightError as exc:
            pytest.skip(f"Playwright cannot launch {CHROMIUM}: {str(exc).splitlines()[0]}")
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.grant_permissions(["camera"], origin=ui_server.url)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("request", lambda request: requested.append(request.url))
        page.on("pageerror", lambda exc: requested.append(f"pageerror: {exc}"))
        page.goto(f"{ui_server.url}/ui/")
        yield page
        browser.close()


@pytest.fixture(scope="module")
def photo(jpgs: list[bytes], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "photo.jpg"
    path.write_bytes(jpgs[0])
    return path


@pytest.fixture(scope="module")
def photo_card(page: Page, photo: Path) -> Locator:
    """The photo uploaded on the page: its result card."""
    page.get_by_test_id("photos-input").set_input_files(photo)
    card = page.locator(f"[data-testid=result][data-filename='{photo.name}']")
    expect(card).to_be_visible()
    return card


def test_the_card_shows_the_served_model(page: Page, ui_server: Server) -> None:
    served = httpx.get(f"{ui_server.url}/model", timeout=30).json()
    expect(page.get_by_test_id("card-version")).to_have_text(served["model_version"])
    expect(page.get_by_test_id("model-card")).to_contain_text(served["backend"])


def test_a_photo_is_charted_with_the_services_label(photo_card: Locator, ui_server: Server, photo: Path) -> None:
    # the tiny model is untrained: the expected label is the API's answer for the same bytes
    answer = httpx.post(f"{ui_server.url}/predict", files=[("images", (photo.name, photo.read_bytes()))], timeout=60)
    expected = answer.json()["results"][0]
    card = photo_card
    bars = card.get_by_test_id("topk-chart").locator(".bar")
    expect(bars).to_have_count(len(expected["top_k"]))
    assert bars.first.get_attribute("data-label") == expected["label"]
    expect(card.get_by_test_id("top-label")).to_contain_text(expected["label"])
    assert card.get_by_test_id("thumb").get_attribute("src").startswith("blob:")


def test_free_text_labels_are_scored(page: Page, photo_card: Locator) -> None:
    typed = ["someone cooking", "a person riding a bike", "juggling"]
    page.get_by_test_id("labels-input").fill(", ".join(typed))
    page.get_by_test_id("classify-btn").click()
    bars = page.get_by_test_id("classify-chart").first.locator(".bar")
    expect(bars).to_have_count(len(typed))
    assert sorted(bars.evaluate_all("bars => bars.map(b => b.dataset.label)")) == sorted(typed)


def test_the_explanation_overlay_is_a_png(photo_card: Locator, photo: Path) -> None:
    card = photo_card
    card.get_by_test_id("explain-btn").click()
    overlay = card.get_by_test_id("overlay")
    expect(overlay).to_be_visible()
    prefix = "data:image/png;base64,"
    src = overlay.get_attribute("src")
    assert src.startswith(prefix)
    png = Image.open(io.BytesIO(base64.b64decode(src[len(prefix) :])))
    assert png.format == "PNG" and png.size == Image.open(photo).size
    expect(card.get_by_test_id("explain-status")).to_contain_text(card.get_attribute("data-label"))


def test_feedback_lands_in_the_review_queue(photo_card: Locator, ui_server: Server) -> None:
    card = photo_card
    select = card.get_by_test_id("feedback-label")
    options = select.locator("option").evaluate_all("options => options.map(o => o.value).filter(Boolean)")
    chosen = next(label for label in options if label != card.get_attribute("data-label"))
    select.select_option(chosen)
    card.get_by_test_id("feedback-btn").click()
    expect(card.get_by_test_id("feedback-status")).to_have_text(f"Thanks — queued for review as {chosen}")
    items = [json.loads(p.read_text()) for p in (ui_server.review / "pending").glob("*.json")]
    # waiting, with the chosen label, for a reviewer to confirm (`clip-har review label`)
    assert [item["label"] for item in items if item["reason"] == "feedback"] == [chosen], items


def test_a_video_is_shown_as_a_timeline(
    page: Page, tiny_data_master: Path, tmp_path: Path, write_video: Callable[..., Path]
) -> None:
    frames = [Image.open(p) for p in sorted((tiny_data_master / "images").rglob("*.jpg"))[:4]]
    video = write_video(tmp_path / "clip.mp4", frames, fps=2)
    page.get_by_test_id("video-input").set_input_files(video)
    expect(page.get_by_test_id("frames").locator("li")).to_have_count(2)  # 2 s at the default 1 frame/s
    segments = page.get_by_test_id("timeline").locator(".segment")
    expect(segments.first).to_be_visible()
    assert all(segments.evaluate_all("s => s.map(b => b.dataset.label)"))


def test_a_camera_snapshot_is_predicted(page: Page) -> None:
    page.get_by_test_id("camera-btn").click()
    expect(page.get_by_test_id("camera-preview")).to_be_visible()
    page.wait_for_function("document.querySelector('#camera-preview').videoWidth > 0")
    page.get_by_test_id("snapshot-btn").click()
    card = page.locator("[data-testid=result][data-filename^=snapshot-]")
    expect(card.get_by_test_id("topk-chart").locator(".bar").first).to_be_visible()


def test_a_refused_upload_shows_the_services_reason(page: Page, tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_bytes(b"not an image at all")
    page.get_by_test_id("photos-input").set_input_files(text)
    expect(page.get_by_test_id("error")).to_contain_text("/predict: file 1")


# The model card, on what the service really has: the served model's held-out report and lineage
# from the store; a drift verdict once a check ran on its traffic; a challenger while one shadows.
# A part it has not got (no check yet, no challenger, no Prefect or MLflow up) is a dash or hidden.


def _fixed(x: float, digits: int = 3) -> str:
    """JavaScript's `x.toFixed(digits)`, as the page formats numbers: the double's exact value,
    a tie rounded away from zero."""
    return str(Decimal(x).quantize(Decimal(1).scaleb(-digits), ROUND_HALF_UP))


def _card(server: Server) -> dict:
    r = httpx.get(f"{server.url}/model/card", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_the_card_shows_the_held_out_report_and_a_missing_part_is_a_dash(page: Page, ui_server: Server) -> None:
    card = _card(ui_server)
    assert card["drift"] is None and card["shadow"]["challenger"] is None  # no check yet, no challenger
    assert card["links"] == {"prefect": None, "mlflow": None, "mlflow_run": None}  # no stack up here
    page.reload()
    expect(page.get_by_test_id("card-version")).to_have_text(ui_server.tags[0])
    expect(page.locator("#card-backend")).to_have_text(card["backend"])
    expect(page.locator("#card-registry")).to_have_text("3")
    expect(page.locator("#card-data")).to_have_text("demo-v1")
    expect(page.get_by_test_id("card-lineage")).to_contain_text("r1")  # its MLflow run

    m = card["metrics"]
    row = page.get_by_test_id("card-metrics").locator("table").first.locator("tbody tr")
    expect(row.locator("th")).to_have_text(m["split"])
    expect(row.locator("td")).to_have_text(
        [str(m["n"]), _fixed(m["accuracy"]), _fixed(m["macro_f1"]), _fixed(m["ece"])]
    )

    labels, matrix = card["confusion"]["labels"], card["confusion"]["matrix"]
    assert labels == card["labels"] and sum(map(sum, matrix)) == m["n"] == 60
    cells = page.get_by_test_id("card-confusion").locator("td")
    expect(cells).to_have_count(len(labels) ** 2)
    expect(cells).to_have_text([str(count) if count else "" for counts in matrix for count in counts])

    expect(page.get_by_test_id("card-drift")).to_have_text("—")
    expect(page.get_by_test_id("card-shadow")).to_have_text("—")
    for link in ("prefect", "mlflow", "mlflow_run"):
        expect(page.locator(f"#link-{link}")).to_be_hidden()


def test_the_card_shows_a_drift_check_on_the_traffic_and_links_its_report(
    page: Page, ui_server: Server, jpgs: list[bytes], tmp_path: Path
) -> None:
    from clip_har.monitoring.drift import DriftConfig
    from clip_har.monitoring.monitor import run_check
    from clip_har.monitoring.predlog import read_log
    from clip_har.monitoring.reference import REFERENCE

    def traffic(n: int) -> pd.DataFrame:  # n more predictions, then the log once it has them all
        before = len(read_log(ui_server.log)[0]) if ui_server.log.exists() else 0
        for i in range(n):
            files = [("images", (f"{i}.jpg", jpgs[i % len(jpgs)]))]
            assert httpx.post(f"{ui_server.url}/predict", files=files, timeout=60).status_code == 200
        deadline = time.monotonic() + 30
        while len(df := read_log(ui_server.log)[0]) < before + n and time.monotonic() < deadline:
            time.sleep(0.3)  # written in the background
        assert len(df) >= before + n, (len(df), before, n)
        return df

    reference = tmp_path / "reference"  # the served model's reference window: its first traffic
    reference.mkdir()
    traffic(12).sort_values("ts").head(12).to_parquet(reference / REFERENCE)
    traffic(12)
    result, _ = run_check(ui_server.log, reference, ui_server.log.parent / "reports", DriftConfig(min_rows=10))
    assert result.status != "insufficient_data"
    drift = _card(ui_server)["drift"]
    assert drift["status"] == result.status and drift["report_url"] == "/drift/report"

    page.reload()
    expect(page.get_by_test_id("drift-status")).to_have_text(result.status.replace("_", " "))
    for signal in drift["scores"]:
        expect(page.get_by_test_id("card-drift")).to_contain_text(signal)
    link = page.get_by_test_id("drift-report")
    assert (link.get_attribute("href"), link.get_attribute("target")) == ("/drift/report", "_blank")
    report = httpx.get(f"{ui_server.url}{link.get_attribute('href')}", timeout=30)
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert "<html" in report.text.lower()


def test_the_card_shows_the_challenger_in_shadow(
    page: Page, ui_server: Server, jpgs: list[bytes], tmp_path: Path
) -> None:
    challenger = ui_server.tags[1]
    shadow = f"{ui_server.url}/admin/shadow"
    r = httpx.post(shadow, json={"model": challenger}, headers=ADMIN, timeout=120)
    assert r.status_code == 200 and r.json()["challenger"] == challenger, r.text
    time.sleep(1.1)  # every HTTP worker re-reads which model shadows at most once a second
    photos = []
    for i, data in enumerate(jpgs[:3]):
        photos.append(tmp_path / f"shadowed-{i}.jpg")
        photos[-1].write_bytes(data)
    for path in photos:  # uploads on the page: one /predict each, scored by the challenger too
        page.get_by_test_id("photos-input").set_input_files(path)
        expect(page.locator(f"[data-testid=result][data-filename='{path.name}']")).to_be_visible()
    deadline = time.monotonic() + 60
    while (card := _card(ui_server))["shadow"]["requests"] < len(photos) and time.monotonic() < deadline:
        time.sleep(0.3)  # scored in the background
    assert card["shadow"]["challenger"] == challenger and card["shadow"]["requests"] == len(photos), card["shadow"]

    page.reload()
    agreement = f"{_fixed(100 * card['shadow']['agreement'], 1)}%"
    expect(page.get_by_test_id("card-shadow")).to_have_text(
        f"{challenger}: {len(photos)} requests, agreement {agreement}"
    )

    r = httpx.post(shadow, json={"model": ""}, headers=ADMIN, timeout=120)
    assert r.status_code == 200, r.text
    assert _card(ui_server)["shadow"]["challenger"] is None
    page.reload()
    expect(page.get_by_test_id("card-shadow")).to_have_text("—")


def test_the_page_loaded_nothing_from_elsewhere(page: Page, ui_server: Server, requested: list[str]) -> None:
    assert requested, "no request recorded"
    elsewhere = [u for u in requested if not u.startswith((f"{ui_server.url}/", "data:", "blob:"))]
    assert elsewhere == [], elsewhere
