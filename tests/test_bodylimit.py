"""Oversized bodies and too many parts are refused with 413 before the app has read them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from clip_har.serving.bodylimit import BodyLimit


class App:
    """An ASGI app that reads the whole body, then answers 200 with its length."""

    def __init__(self) -> None:
        self.read = 0
        self.called = False

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
        self.called = True
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ConnectionError("client went away")  # what a framework does
            self.read += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(self.read).encode()})


def call(body_chunks: list[bytes], headers: dict[str, str], path: str = "/predict") -> tuple[App, int, bytes]:
    app, sent = App(), []
    middleware = BodyLimit(app, limits={"/predict": 100}, default=10, max_parts=3)
    chunks = [
        {"type": "http.request", "body": c, "more_body": i < len(body_chunks) - 1} for i, c in enumerate(body_chunks)
    ]

    async def receive() -> dict:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "path": path, "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(middleware(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return app, status, body


def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    app, status, body = call([b"x" * 200], {"content-length": "200"})
    assert status == 413 and not app.called
    assert "200 bytes" in json.loads(body)["error"] and "100" in json.loads(body)["error"]


def test_a_chunked_body_is_cut_at_the_limit() -> None:
    app, status, body = call([b"x" * 60] * 5, {"transfer-encoding": "chunked"})
    assert status == 413 and app.read <= 120 and "over the limit" in json.loads(body)["error"]


def test_other_routes_have_the_default_limit_and_small_bodies_pass() -> None:
    assert call([b"x" * 50], {"content-length": "50"})[1] == 200
    assert call([b"x" * 50], {"content-length": "50"}, path="/admin/reload")[1] == 413


def test_too_many_multipart_parts_are_refused() -> None:
    ctype = {"content-type": "multipart/form-data; boundary=BB"}
    part = b"--BB\r\nA: b\r\n\r\nx\r\n"  # 16 bytes: four parts stay under the byte limit
    ok = call([part * 3 + b"--BB--\r\n"], ctype)
    assert ok[1] == 200
    # four parts, one delimiter split between chunks: counted only if the chunks are joined
    app, status, body = call([part + part[:2], part[2:] + part * 2 + b"--BB--\r\n"], ctype)
    assert status == 413 and "parts" in json.loads(body)["error"]


def test_a_bad_content_length_is_a_400() -> None:
    assert call([b"x"], {"content-length": "lots"})[1] == 400
