"""The service's framework-free HTTP middlewares, driven as ASGI apps: one error shape for every
refusal (and a published document that says so), and admission control with a 503 + Retry-After."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from clip_har.serving.admission import Admission
from clip_har.serving.errors import ErrorContract, error_message, publish_errors


def _app(status: int, body: bytes, content_type: bytes = b"application/json", chunks: int = 1):
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]})
        step = max(1, len(body) // chunks)
        pieces = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
        for i, piece in enumerate(pieces):
            await send({"type": "http.response.body", "body": piece, "more_body": i < len(pieces) - 1})

    return app


async def _call(app: Any, path: str = "/predict") -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app({"type": "http", "path": path, "method": "POST", "headers": []}, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


# every shape the framework under the service answers errors with, and the line we publish
SHAPES = {
    "pydantic validation": (
        400,
        {
            "error": "2 validation error for Input",
            "detail": [
                {"loc": ["images"], "msg": "Field required"},
                {"loc": ["top_k"], "msg": "Input should be a valid integer"},
            ],
        },
        "images: Field required; top_k: Input should be a valid integer",
    ),
    "BentoML's one-item array": (400, [{"error": "file 1: cannot decode image"}], "file 1: cannot decode image"),
    "FastAPI detail": (404, {"detail": "Not Found"}, "Not Found"),
    "plain text": (405, "Method Not Allowed", "Method Not Allowed"),
    "empty": (404, "", "Not Found"),
    "hidden 503": (503, {"error": "An unexpected error has occurred, please check the server log."}, "overloaded"),
}


@pytest.mark.parametrize("case", sorted(SHAPES))
def test_every_error_leaves_in_one_shape(case: str) -> None:
    status, payload, expected = SHAPES[case]
    raw = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
    assert expected in error_message(status, raw)
    app = ErrorContract(_app(status, raw, b"text/plain" if isinstance(payload, str) else b"application/json", 3), 7)
    got_status, headers, body = asyncio.run(_call(app))
    assert got_status == status and headers[b"content-type"] == b"application/json"
    assert int(headers[b"content-length"]) == len(body)
    assert set(json.loads(body)) == {"error"} and expected in json.loads(body)["error"]
    assert (headers.get(b"retry-after") == b"7") == (status == 503)


def test_a_flood_of_validation_errors_is_one_short_line() -> None:
    detail = [{"loc": ["images", i], "msg": "Input should be a file"} for i in range(100_000)]
    line = error_message(400, json.dumps({"error": "100000 validation errors", "detail": detail}).encode())
    assert line.endswith("and 99997 more") and len(line) < 200


def test_an_error_start_without_a_body_is_still_answered_in_the_shape() -> None:
    async def stops_after_start(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 400, "headers": []})

    status, headers, body = asyncio.run(_call(ErrorContract(stops_after_start, 7)))
    assert status == 400 and json.loads(body) == {"error": "Bad Request"}
    assert int(headers[b"content-length"]) == len(body)


def test_successes_pass_untouched() -> None:
    body = json.dumps({"results": [1, 2]}).encode()
    assert asyncio.run(_call(ErrorContract(_app(200, body, chunks=2), 7)))[2] == body


def test_the_published_document_names_every_refusal_in_the_same_shape() -> None:
    spec = {
        "paths": {
            "/predict": {"post": {"responses": {"200": {"description": "ok"}, "400": {"$ref": "x"}}}},
            "/healthz": {"get": {"responses": {"200": {"description": "ok"}}}},
        },
        "components": {"schemas": {"InvalidArgument": {}, "NotFound": {}, "InternalServerError": {}}},
    }
    out = publish_errors(spec, {"/predict": {400: "bad", 503: "busy"}})
    assert set(out["components"]["schemas"]) == {"Error"}
    responses = out["paths"]["/predict"]["post"]["responses"]
    assert set(responses) == {"200", "400", "503", "default"}
    assert responses["503"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert set(out["paths"]["/healthz"]["get"]["responses"]) == {"200", "default"}


def test_admission_holds_a_bounded_queue_and_refuses_the_rest_with_retry_after() -> None:
    async def scenario() -> list[Any]:
        release = asyncio.Event()
        entered: list[int] = []

        async def slow(scope: Any, receive: Any, send: Any) -> None:
            entered.append(1)
            await release.wait()
            await _app(200, b"{}")(scope, receive, send)

        gate = Admission(slow, paths={"/predict"}, max_inflight=1, max_queue=1, retry_after_s=3)
        first = asyncio.create_task(_call(gate))
        await asyncio.sleep(0)  # the first takes the only slot
        second = asyncio.create_task(_call(gate))
        await asyncio.sleep(0)  # the second waits in the queue
        third = await _call(gate)  # slot taken, queue full: refused at once
        other_route = await _call(Admission(_app(200, b"{}"), {"/predict"}, 1, 0, 3), "/model")
        assert len(entered) == 1 and gate.waiting == 1
        release.set()
        return [await first, await second, third, other_route, len(entered), gate.waiting]

    first, second, third, other_route, entered, waiting = asyncio.run(scenario())
    assert first[0] == 200 and second[0] == 200 and entered == 2 and waiting == 0
    assert third[0] == 503 and third[1][b"retry-after"] == b"3" and "busy" in json.loads(third[2])["error"]
    assert other_route[0] == 200  # only the inference routes are admitted


def test_a_request_waiting_longer_than_its_bound_is_a_503() -> None:
    async def scenario() -> tuple[int, dict, bytes]:
        release = asyncio.Event()

        async def slow(scope: Any, receive: Any, send: Any) -> None:
            await release.wait()
            await _app(200, b"{}")(scope, receive, send)

        gate = Admission(slow, {"/predict"}, max_inflight=1, max_queue=4, retry_after_s=2, max_wait_s=0.01)
        first = asyncio.create_task(_call(gate))
        await asyncio.sleep(0)  # holds the only slot until released
        waited = await _call(gate)
        release.set()
        assert (await first)[0] == 200 and gate.waiting == 0
        return waited

    status, headers, body = asyncio.run(scenario())
    assert status == 503 and headers[b"retry-after"] == b"2" and "no slot within" in json.loads(body)["error"]


def test_admission_refuses_impossible_bounds() -> None:
    with pytest.raises(ValueError, match="max_inflight"):
        Admission(_app(200, b""), {"/predict"}, max_inflight=0, max_queue=0, retry_after_s=1)
