"""Admission control: a bounded number of requests at work per process, a bounded queue behind
them, and a 503 with Retry-After for the rest. An ASGI middleware with no framework in it.

It sits before the framework reads a body, so a waiting request holds no decoded upload: the
memory of a process is bounded by `max_inflight` requests, however many clients call at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from clip_har.serving.asgi import ASGIApp, Receive, Scope, Send, send_error


class Admission:
    """`paths`: the routes that do real work (inference); every other route passes straight on."""

    def __init__(
        self,
        app: ASGIApp,
        paths: Collection[str],
        max_inflight: int,
        max_queue: int,
        retry_after_s: int,
        max_wait_s: float | None = None,
    ) -> None:
        """`max_wait_s`: how long a request may wait for a slot before it is a 503 (else for ever)."""
        if max_inflight < 1 or max_queue < 0:
            raise ValueError("max_inflight must be >= 1 and max_queue >= 0")
        self.app, self.paths, self.retry_after_s = app, frozenset(paths), retry_after_s
        self.max_inflight, self.max_queue, self.max_wait_s = max_inflight, max_queue, max_wait_s
        self._slots = asyncio.Semaphore(max_inflight)
        self.waiting = 0  # one event loop per process: plain counters need no lock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        if self._slots.locked() and self.waiting >= self.max_queue:
            reason = f"busy: {self.max_inflight} requests at work and {self.waiting} waiting; retry later"
            await send_error(send, 503, reason, self.retry_after_s)
            return
        self.waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), self.max_wait_s)
        except TimeoutError:
            # answered by us, not cut off later by the server's request timeout (a 504)
            reason = f"busy: no slot within {self.max_wait_s:g} s; retry later"
            await send_error(send, 503, reason, self.retry_after_s)
            return
        finally:
            self.waiting -= 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._slots.release()
