"""A small client for the running clip-har service: what the automations and the loop demo call."""

from __future__ import annotations

from pathlib import Path

import httpx

from clip_har.settings import load_settings


class ServiceError(RuntimeError):
    pass


def _check(r: httpx.Response, what: str) -> dict:
    if r.status_code >= 400:
        raise ServiceError(f"{what}: HTTP {r.status_code} {r.text[:300]}")
    return r.json()


def _admin(url: str, path: str, model: str, token: str | None, timeout: float) -> httpx.Response:
    """POST an admin call with the admin token (default: the `admin_token` setting)."""
    token = load_settings().admin_token if token is None else token
    headers = {"X-Admin-Token": token} if token else {}
    try:
        return httpx.post(f"{url}{path}", json={"model": model}, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise ServiceError(f"service at {url} is not reachable: {exc}") from exc


def switch_model(url: str, model: str, token: str | None = None, timeout: float = 300) -> dict:
    """Ask the service to serve `model` (a BentoML tag); {"model_version", "previous"}.
    `token`: the admin token (default: the `admin_token` setting)."""
    return _check(_admin(url, "/admin/reload", model, token, timeout), f"service at {url} refused to switch to {model}")


def set_shadow(url: str, model: str, token: str | None = None, timeout: float = 300) -> dict:
    """Ask the service to score its traffic with `model` (a BentoML tag) in shadow beside the
    champion; "" stops shadowing. {"challenger", "champion"}. `token`: as for `switch_model`."""
    what = f"shadow {model}" if model else "stop shadowing"
    return _check(_admin(url, "/admin/shadow", model, token, timeout), f"service at {url} refused to {what}")


def shadow_status(url: str, timeout: float = 30) -> dict:
    """GET /shadow: the challenger in shadow and its figures since it started (see clip_har.rollout)."""
    try:
        r = httpx.get(f"{url}/shadow", timeout=timeout)
    except httpx.HTTPError as exc:
        raise ServiceError(f"service at {url} is not reachable: {exc}") from exc
    return _check(r, f"GET {url}/shadow")


def model_info(url: str, timeout: float = 30) -> dict:
    return _check(httpx.get(f"{url}/model", timeout=timeout), f"GET {url}/model")


def predict_files(client: httpx.Client, url: str, files: list[Path], top_k: int = 1) -> dict:
    """POST /predict with several image files in one request."""
    parts = [("images", (f.name, f.read_bytes(), "image/jpeg")) for f in files]
    return _check(client.post(f"{url}/predict", files=parts, data={"top_k": str(top_k)}), "POST /predict")
