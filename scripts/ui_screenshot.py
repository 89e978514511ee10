"""A screenshot of the web app (/ui/) for the README: one photo predicted, explained and scored
against free-text labels, beside the model card. Headless Chromium (Debian's) through Playwright.

    .venv/bin/python scripts/ui_screenshot.py --image photo.jpg                  # serves the champion
    .venv/bin/python scripts/ui_screenshot.py --image photo.jpg --model clip-har:abc
    .venv/bin/python scripts/ui_screenshot.py --image photo.jpg --url http://127.0.0.1:3000

Without --url it starts the service (`clip-har serve`, or `bentoml serve` on --model) on a free
loopback port with the environment's CLIP_HAR_HOME, and stops it at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1280, "height": 900}
LABELS = "someone on a beach, someone in a park, someone indoors, someone on a street"  # the demo world's scenes
TIMEOUT_MS = 60_000
# the screenshot's requests are not traffic: kept out of the prediction log (drift) and review queue
QUIET = {"CLIP_HAR_PREDICTION_LOG": "off", "CLIP_HAR_REVIEW_DIR": "off"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(model: str | None, ready_s: float = 180) -> Iterator[str]:
    """The service on a free loopback port (the champion, or `model` from the BentoML store);
    its process group is stopped on the way out."""
    port = _free_port()
    env = {**os.environ, **QUIET}
    if model:
        cmd = [sys.executable, "-m", "bentoml", "serve", "service:ClipHar", "--host", "127.0.0.1", "--port", str(port)]
        env["CLIP_HAR_MODEL"], cwd = model, ROOT / "deployments"
    else:
        cmd, cwd = [str(Path(sys.executable).with_name("clip-har")), "serve", "--port", str(port)], ROOT
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + ready_s
        while time.time() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"the service exited with {proc.returncode}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise SystemExit(f"the service was not ready within {ready_s:.0f} s")
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # graceful: the prediction log is flushed
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def shoot(url: str, image: Path, out: Path, labels: str, full_page: bool) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{url.rstrip('/')}/ui/")
        expect(page.get_by_test_id("card-version")).not_to_have_text("—")
        page.get_by_test_id("photos-input").set_input_files(image)
        card = page.get_by_test_id("result").first
        expect(card.get_by_test_id("topk-chart").locator(".bar").first).to_be_visible()
        card.get_by_test_id("explain-btn").click()
        expect(card.get_by_test_id("overlay")).to_be_visible()
        if labels:
            page.get_by_test_id("labels-input").fill(labels)
            page.get_by_test_id("classify-btn").click()
            expect(page.get_by_test_id("classify-chart").first.locator(".bar").first).to_be_visible()
        page.evaluate("document.activeElement && document.activeElement.blur()")  # no focus ring in the picture
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=full_page)
        browser.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, required=True, help="the photo to upload")
    parser.add_argument("--url", help="a running service (default: start one)")
    parser.add_argument("--model", help="a BentoML model tag to serve (default: the champion)")
    parser.add_argument("--labels", default=LABELS, help="free-text labels to score ('' for none)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "ui.png")
    parser.add_argument("--full-page", action="store_true", help="the whole page, not the 1280x900 window")
    args = parser.parse_args(argv)
    if not args.image.is_file():
        parser.error(f"no such image: {args.image}")
    if args.url:
        shoot(args.url, args.image, args.out, args.labels, args.full_page)
    else:
        with served(args.model) as url:
            shoot(url, args.image, args.out, args.labels, args.full_page)
    print(args.out)


if __name__ == "__main__":
    main()
