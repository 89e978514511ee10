"""Hostile uploads against a real `bentoml serve`: every request is answered 4xx or 2xx (never
5xx), in the one error shape, within a bounded time, and the service's processes (all of them)
do not grow their resident memory beyond a bound. Then schemathesis against the published schema,
and overload: a 503 with Retry-After, never a 500."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import test_service
from PIL import Image
from test_service import ADMIN, Server, Store, _png, running_server

pytestmark = pytest.mark.integration
store = test_service.store  # the module's fixture: the same small model store
BOUND_S = 60  # per request: a request that takes longer fails the test (hostile work is bounded)
RSS_GROWTH_MB = 300  # the service's processes together, over the whole hostile suite


def _image(w: int, h: int, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (90, 30, 160)).save(buf, format=fmt)
    return buf.getvalue()


def _rss_mb(proc: subprocess.Popen) -> float:
    root = psutil.Process(proc.pid)
    procs = [root, *root.children(recursive=True)]
    return sum(p.memory_info().rss for p in procs if p.is_running()) / 1e6


@pytest.fixture(scope="module")
def hostile_server(
    store: Store, tmp_path_factory: pytest.TempPathFactory, free_port: Callable[[], int]
) -> Iterator[Server]:
    """Served from a store without the broken model, so that a reload to `latest` (schemathesis
    sends `{}`) can succeed: the refusals under test are the service's, not a broken model's."""
    tmp = tmp_path_factory.mktemp("hostile")
    home = Path(shutil.copytree(store.home, tmp / "store"))
    name, version = store.broken.split(":")
    shutil.rmtree(home / "models" / name / version)
    (home / "models" / name / "latest").write_text(store.tags[1].split(":")[1])
    with running_server(Store(home, store.tags, ""), tmp, free_port()) as srv:
        yield srv


def _cases(video_big_frames: bytes) -> dict[str, dict]:
    """name → httpx.request keyword arguments (method and path first)."""
    one = [("images", ("a.png", _image(32, 32)))]
    form = "multipart/form-data"
    return {
        "aspect-ratio bomb": {"files": [("images", ("thin.png", _image(1, 20_000)))]},
        "pixel bomb": {"files": [("images", ("big.png", _png(600, 600)))]},
        "truncated png": {"files": [("images", ("t.png", _png(64, 64, noise=True)[:200]))]},
        "not an image": {"files": [("images", ("x.jpg", b"GIF89a" + b"\0" * 50))]},
        "empty file": {"files": [("images", ("x.png", b""))]},
        "wrong field name": {"files": [("image", ("a.png", _image(32, 32)))]},
        "unknown extra field": {"files": one, "data": {"verbose": "1"}},
        "text in the file field": {"data": {"images": "hello"}},
        "a URL in the file field": {"data": {"images": "http://127.0.0.1:1/x.png"}},
        "multipart without boundary": {"content": b"garbage", "headers": {"Content-Type": form}},
        "multipart garbage": {"content": b"garbage", "headers": {"Content-Type": f"{form}; boundary=xx"}},
        "multipart without part name": {
            "content": b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n",
            "headers": {"Content-Type": f"{form}; boundary=b"},
        },
        "non-UTF-8 field": {"files": [*one, ("top_k", (None, b"\xff\xfe", "text/plain"))]},
        "top_k a boolean": {"files": one, "data": {"top_k": "true"}},
        "top_k huge": {"files": one, "data": {"top_k": str(10**30)}},
        "JSON body": {"json": {"images": ["/etc/passwd"]}},
        "JSON array of 200k items": {"json": {"images": [0] * 200_000}},
        "video: two files": {"path": "/predict_video", "files": [("video", ("a.png", _image(8, 8)))] * 2},
        "JSON not an object": {"content": b"[1, 2]", "headers": {"Content-Type": "application/json"}},
        "JSON broken": {"content": b"{\xff", "headers": {"Content-Type": "application/json"}},
        "too many files": {"files": [("images", (f"{i}.png", _image(8, 8))) for i in range(5)]},
        "too many parts": {"files": [("images", (f"{i}.png", _image(8, 8))) for i in range(12)]},
        "over the body limit": {"files": [("images", ("a.png", b"\0" * 6_000_000))]},
        "GET on a POST route": {"method": "GET"},
        "unknown route": {"path": "/predict/../../etc/passwd"},
        "classify: no labels": {"path": "/classify", "files": one, "data": {"labels": " , "}},
        "classify: 1000 labels": {"path": "/classify", "files": one, "data": {"labels": ",".join(["x"] * 1000)}},
        "classify: a label of 10k characters": {"path": "/classify", "files": one, "data": {"labels": "y" * 10_000}},
        "classify: labels of numbers": {"path": "/classify", "files": one, "data": {"labels": "[1, 2]"}},
        "video: garbage": {"path": "/predict_video", "files": [("video", ("v.mp4", b"\0" * 4096))]},
        "video: frames over the pixel limit": {
            "path": "/predict_video",
            "files": [("video", ("v.mp4", video_big_frames))],
        },
        "video: fps 0": {"path": "/predict_video", "files": [("video", ("v.png", _image(8, 8)))], "data": {"fps": "0"}},
        "video: fps 1e9": {
            "path": "/predict_video",
            "files": [("video", ("v.png", _image(8, 8)))],
            "data": {"fps": "1e9"},
        },
        "reload: text/plain": {
            "path": "/admin/reload",
            "content": b'{"model": "clip-har:latest"}',
            "headers": {**ADMIN, "Content-Type": "text/plain"},
        },
        "reload: no token": {"path": "/admin/reload", "json": {"model": "clip-har:latest"}, "headers": {}},
        "reload: malformed tag": {"path": "/admin/reload", "json": {"model": "../../x"}, "headers": ADMIN},
        "reload: unknown model name": {"path": "/admin/reload", "json": {"model": "nothing:here"}, "headers": ADMIN},
        "reload: a number": {"path": "/admin/reload", "json": {"model": 5}, "headers": ADMIN},
        "reload: unknown field": {"path": "/admin/reload", "json": {"modle": "x"}, "headers": ADMIN},
    }


def test_hostile_uploads_are_refused_in_bounded_time_and_memory(
    hostile_server: Server, tmp_path: Path, write_video: Callable[..., Path]
) -> None:
    frames = [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(4)]
    big_frames = write_video(tmp_path / "big.mp4", frames, fps=2, size=704).read_bytes()  # 495,616 px > 250,000
    url, proc = hostile_server.url, hostile_server.proc
    ok = [("images", ("a.png", _image(32, 32)))]
    assert httpx.post(f"{url}/predict", files=ok, timeout=BOUND_S).status_code == 200  # warm, then measure
    before = _rss_mb(proc)
    answers = {}
    for _ in range(3):  # repeated: a leak grows with every round, a warm-up cost does not
        for name, kwargs in _cases(big_frames).items():
            kwargs = dict(kwargs)
            method, path = kwargs.pop("method", "POST"), kwargs.pop("path", "/predict")
            kwargs.setdefault("headers", {})
            r = httpx.request(method, f"{url}{path}", timeout=BOUND_S, **kwargs)
            answers[name] = (r.status_code, r.text[:200])
            assert r.status_code < 500, (name, r.status_code, r.text)
            if r.status_code >= 400:
                assert r.headers["content-type"] == "application/json", name
                body = r.json()
                assert list(body) == ["error"] and body["error"].strip(), (name, body)
        assert proc.poll() is None  # nothing crashed the server
    grown = _rss_mb(proc) - before
    assert grown < RSS_GROWTH_MB, f"service processes grew {grown:.0f} MB over the hostile suite"
    expected = {
        "wrong field name": (400, "unknown field 'image'"),
        "a URL in the file field": (400, "not fetched"),
        "multipart garbage": (400, "malformed"),
        "aspect-ratio bomb": (400, "aspect"),
        "over the body limit": (413, "over the limit"),
        "top_k huge": (200, "results"),
        "reload: unknown model name": (404, "not in the BentoML model store"),
        "reload: text/plain": (415, "application/json"),
        "JSON array of 200k items": (415, "multipart/form-data"),
        "video: two files": (400, "one file"),
        "GET on a POST route": (405, "Method Not Allowed"),
        "video: frames over the pixel limit": (400, "pixel"),
    }
    for name, (status, needle) in expected.items():
        assert answers[name][0] == status and needle in answers[name][1], (name, answers[name])
    assert httpx.post(f"{url}/predict", files=ok, timeout=BOUND_S).status_code == 200  # still serving


HOOKS = """
import io
import schemathesis
from hypothesis import strategies as st
from PIL import Image


def _image(w, h, fmt, color):
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format=fmt)
    return buf.getvalue()


# the schema says "an image file" (and a video file, which may be a still image): real ones
SIZES, COLOURS = ((1, 1), (33, 47), (200, 90)), ((0, 0, 0), (200, 30, 90))
FILES = [_image(w, h, f, c) for w, h in SIZES for f in ("PNG", "JPEG") for c in COLOURS]
schemathesis.openapi.media_type("image/*", st.sampled_from(FILES))
schemathesis.openapi.media_type("video/*", st.sampled_from(FILES))
"""


def _schemathesis(url: str, tmp_path: Path, phase: str, exclude: str) -> subprocess.CompletedProcess:
    (tmp_path / "st_hooks.py").write_text(HOOKS)
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", f"{url}/docs.json", "--phases", phase, "--seed", "1"]
    cmd += [
        "--max-examples",
        "60",
        "--exclude-checks",
        exclude,
        "--no-color",
        "-H",
        f"X-Admin-Token: {ADMIN['X-Admin-Token']}",
    ]
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "SCHEMATHESIS_HOOKS": "st_hooks"}
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    ("phase", "exclude"),
    [
        # Multipart text cannot say "absent" from "empty": an empty label list is no part at all,
        # and an empty part is what the coverage phase sends for a one-item list; so the coverage
        # phase checks rejection of bad input, and the fuzzing phase acceptance of good input.
        ("coverage", "positive_data_acceptance"),
        ("fuzzing", "negative_data_rejection"),
    ],
)
def test_schemathesis_finds_nothing(hostile_server: Server, tmp_path: Path, phase: str, exclude: str) -> None:
    out = _schemathesis(hostile_server.url, tmp_path, phase, exclude)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert "generated" in out.stdout  # it ran cases


def test_overload_is_a_503_with_retry_after(store: Store, tmp_path: Path, free_port: Callable[[], int]) -> None:
    """An inference deadline the batched worker cannot meet: a 503 with Retry-After at once (no
    retry that queues again), and the server keeps answering its probes."""
    env = {"CLIP_HAR_INFER_TIMEOUT_S": "0.0001", "CLIP_HAR_RETRY_AFTER_S": "5"}
    with running_server(store, tmp_path, free_port(), env=env) as srv:
        r = httpx.post(f"{srv.url}/predict", files=[("images", ("a.png", _image(32, 32)))], timeout=BOUND_S)
        assert r.status_code == 503 and r.headers["retry-after"] == "5", (r.status_code, r.text)
        assert "no inference within" in r.json()["error"] or "overloaded" in r.json()["error"]
        assert httpx.get(f"{srv.url}/readyz", timeout=10).status_code == 200
        assert json.loads(httpx.get(f"{srv.url}/model", timeout=10).text)["labels"]
