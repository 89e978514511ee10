"""Refuse oversized request bodies before they are read: an ASGI middleware with no framework in it.

A declared Content-Length over the route's limit is answered 413 without reading a byte. A body
without one (chunked) is counted as it streams, together with its multipart parts; past a limit
the app is told the client left, whatever it tries to send is dropped, and the answer is 413.
"""

from __future__ import annotations

from clip_har.serving.asgi import ASGIApp, Message, Receive, Scope, Send, send_error


def _boundary(content_type: bytes) -> bytes | None:
    for param in content_type.split(b";")[1:]:
        key, _, value = param.strip().partition(b"=")
        if key.lower() == b"boundary" and value:
            return b"--" + value.strip(b'"')
    return None


class _Counter:
    """Bytes and multipart parts seen so far; `refusal` says why the body is refused, if it is."""

    def __init__(self, path: str, limit: int, delimiter: bytes | None, max_parts: int | None) -> None:
        self.path, self.limit, self.delimiter, self.max_parts = path, limit, delimiter, max_parts
        self.bytes, self.delimiters, self.tail = 0, 0, b""
        self.refusal: str | None = None

    def add(self, chunk: bytes) -> None:
        self.bytes += len(chunk)
        if self.bytes > self.limit:
            self.refusal = f"request body over the limit of {self.limit} bytes for {self.path}"
        if self.delimiter and self.max_parts is not None:
            # a delimiter may be split between chunks: keep the last len-1 bytes to join the next
            seen = self.tail + chunk
            self.delimiters += seen.count(self.delimiter)
            self.tail = seen[-(len(self.delimiter) - 1) :]
            if self.delimiters - 1 > self.max_parts:  # the last delimiter closes the body
                self.refusal = f"more than {self.max_parts} parts in the multipart body"


class BodyLimit:
    """`limits`: path → bytes; `default` for other paths; `max_parts` for multipart bodies."""

    def __init__(self, app: ASGIApp, limits: dict[str, int], default: int, max_parts: int | None = None) -> None:
        self.app, self.limits, self.default, self.max_parts = app, limits, default, max_parts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = self.limits.get(path, self.default)
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await send_error(send, 400, f"invalid Content-Length {declared.decode(errors='replace')!r}")
                return
            if size > limit:
                await send_error(send, 413, f"request body is {size} bytes, over the limit of {limit} for {path}")
                return
        counter = _Counter(path, limit, _boundary(headers.get(b"content-type", b"")), self.max_parts)
        started = False

        async def counted_receive() -> Message:
            if counter.refusal:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                counter.add(message.get("body", b""))
                if counter.refusal:
                    return {"type": "http.disconnect"}  # the app stops reading: nothing more is buffered
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if counter.refusal:
                return  # our 413 is the answer; the app's reaction to the "disconnect" is dropped
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not counter.refusal:
                raise  # not ours: the app's own error handling stands
        if counter.refusal and not started:
            await send_error(send, 413, counter.refusal)
