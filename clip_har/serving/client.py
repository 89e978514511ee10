"""A small client for the running clip-har service: what the automations and the loop demo call."""

from __future__ import annotations

import os
from pathlib import Path

import httpx


def service_url() -> str:
    """CLIP_HAR_SERVICE_URL, else the loopback port `make serve` / `make up` use."""
    return os.environ.get("CLIP_HAR_SERVICE_URL") or f"http://127.0.0.1:{os.environ.get('CLIP_HAR_PORT', '3000')}"


class ServiceError(RuntimeError):
    pass


def _check(r: httpx.Response, what: str) -> dict:
    if r.status_code >= 400:
        raise ServiceError(f"{what}: HTTP {r.status_code} {r.text[:300]}")
    return r.json()


def switch_model(url: str, model: str, token: str | None = None, timeout: float = 300) -> dict:
    """Ask the service to serve `model` (a BentoML tag); {"model_version", "previous"}."""
    token = os.environ.get("CLIP_HAR_ADMIN_TOKEN", "") if token is None else token
    headers = {"X-Admin-Token": token} if token else {}
    try:
        r = httpx.post(f"{url}/admin/reload", json={"model": model}, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise ServiceError(f"service at {url} is not reachable: {exc}") from exc
    return _check(r, f"service at {url} refused to switch to {model}")


def model_info(url: str, timeout: float = 30) -> dict:
    return _check(httpx.get(f"{url}/model", timeout=timeout), f"GET {url}/model")


def predict_files(client: httpx.Client, url: str, files: list[Path], top_k: int = 1) -> dict:
    """POST /predict with several image files in one request."""
    parts = [("images", (f.name, f.read_bytes(), "image/jpeg")) for f in files]
    return _check(client.post(f"{url}/predict", files=parts, data={"top_k": str(top_k)}), "POST /predict")
