"""ASGI types and the one error answer shared by the service's framework-free middlewares."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def error_messages(status: int, reason: str, retry_after_s: int | None = None) -> tuple[Message, Message]:
    """The start and body messages of an error answer: `{"error": reason}`."""
    body = json.dumps({"error": reason}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after_s is not None:
        headers.append((b"retry-after", str(retry_after_s).encode()))
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    )


async def send_error(send: Send, status: int, reason: str, retry_after_s: int | None = None) -> None:
    for message in error_messages(status, reason, retry_after_s):
        await send(message)
