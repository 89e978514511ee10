"""One error contract for every HTTP answer of the service: an ASGI middleware with no framework in it.

The framework under the service answers errors in several shapes (`{"error", "detail": [...]}`
for validation, `[{"error"}]` for its own 4xx, `{"detail"}` from FastAPI, plain text from
Starlette). Every answer of 400 and up leaves here as `{"error": "<one line>"}`, a 503 always
carries `Retry-After`, and the published OpenAPI document says exactly that.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from clip_har.serving.asgi import ASGIApp, Message, Receive, Scope, Send, error_messages

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "properties": {"error": {"type": "string", "description": "Why the request was refused, in one line"}},
    "required": ["error"],
}
_ERROR_REF = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_MAX_ERROR_BODY = 65_536  # a streamed error body longer than this is passed on as it is
_MAX_LISTED = 3  # validation errors named in the one line; the rest are counted
# the framework's wording for a 5xx it hid; a 503 says what to do instead
_OVERLOADED = "the service is overloaded: retry after the Retry-After seconds"


def _location(loc: list[Any]) -> str:
    return ".".join(str(p) for p in loc) or "body"


def error_message(status: int, body: bytes) -> str:
    """The one-line reason inside any of the shapes the framework answers errors with."""
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        data = body.decode("utf-8", "replace").strip()
    if isinstance(data, list) and len(data) == 1:  # BentoML wraps its own 4xx in a one-item array
        data = data[0]
    if isinstance(data, dict):
        error, detail = data.get("error"), data.get("detail")
        if isinstance(detail, list) and all(isinstance(d, dict) for d in detail):  # pydantic's errors
            parts = [f"{_location(d.get('loc', []))}: {d.get('msg', '')}" for d in detail[:_MAX_LISTED]]
            more = f"; and {len(detail) - _MAX_LISTED} more" if len(detail) > _MAX_LISTED else ""
            return "; ".join(parts) + more if parts else str(error)
        data = error if isinstance(error, str) else detail if isinstance(detail, str) else ""
    text = data if isinstance(data, str) else ""
    if status == HTTPStatus.SERVICE_UNAVAILABLE and (not text or "unexpected error" in text):
        return _OVERLOADED
    return " ".join(text.split()) or HTTPStatus(status).phrase


def publish_errors(spec: dict[str, Any], responses: dict[str, dict[int, str]]) -> dict[str, Any]:
    """`spec` with the contract's error schema: every operation lists the statuses in
    `responses[path]` plus a `default`, all of shape Error; the framework's own error schemas go."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for name in ("InvalidArgument", "NotFound", "InternalServerError"):
        schemas.pop(name, None)
    schemas["Error"] = ERROR_SCHEMA
    for path, item in spec.get("paths", {}).items():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            kept = {code: r for code, r in operation["responses"].items() if str(code)[0] not in "45"}
            for status, description in sorted(responses.get(path, {}).items()):
                kept[str(status)] = {"description": description, **_ERROR_REF}
            kept["default"] = {"description": "Any other error", **_ERROR_REF}
            operation["responses"] = kept
    return spec


class ErrorContract:
    """Rewrites every answer of 400 and up to `{"error": ...}` (503s get `Retry-After`), and the
    OpenAPI document at `docs_path` with `document`."""

    def __init__(
        self,
        app: ASGIApp,
        retry_after_s: int,
        docs_path: str = "/docs.json",
        document: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.app, self.retry_after_s, self.docs_path, self.document = app, retry_after_s, docs_path, document

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_docs = self.document is not None and scope.get("path") == self.docs_path
        held: Message | None = None  # the start of an answer we rewrite, until its body is complete
        chunks: list[bytes] = []

        async def rewriting_send(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                status = message["status"]
                if status >= 400 or (is_docs and status == 200):
                    held = message
                    return
            elif message["type"] == "http.response.body" and held is not None:
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    if sum(map(len, chunks)) <= _MAX_ERROR_BODY or is_docs:
                        return
                    await send(held)  # too long to be one of the framework's errors: pass it on
                    held = None
                    await send({**message, "body": b"".join(chunks)})
                    return
                body = b"".join(chunks)
                start, held = held, None
                for out in self._rewrite(start, body):
                    await send(out)
                return
            await send(message)

        try:
            await self.app(scope, receive, rewriting_send)
        finally:
            if held is not None:  # the app stopped after an error's start: answer it whole, in our shape
                for out in self._rewrite(held, b"".join(chunks)):
                    await send(out)

    def _rewrite(self, start: Message, body: bytes) -> tuple[Message, Message]:
        status = start["status"]
        if status < 400:  # the OpenAPI document
            assert self.document is not None
            doc = json.dumps(self.document(json.loads(body))).encode()
            headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(doc)).encode()))
            return {**start, "headers": headers}, {"type": "http.response.body", "body": doc}
        retry = self.retry_after_s if status in (HTTPStatus.SERVICE_UNAVAILABLE, HTTPStatus.TOO_MANY_REQUESTS) else None
        new_start, new_body = error_messages(status, error_message(status, body), retry)
        # keep the framework's other headers (tracing, cookies), not its body's length or type
        own = {k for k, _ in new_start["headers"]}
        kept = [(k, v) for k, v in start.get("headers", []) if k.lower() not in own]
        return {**new_start, "headers": kept + new_start["headers"]}, new_body
