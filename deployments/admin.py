"""Who may call the service's admin endpoints (/admin/reload, /admin/shadow), and how the batched
worker's refusals reach the caller."""

from __future__ import annotations

import hmac
import re
from http import HTTPStatus

import bentoml
from bentoml.exceptions import BentoMLException, InvalidArgument

from clip_har.serving.errors import error_message
from clip_har.settings import Settings, is_loopback


def _from_this_machine(request: object) -> bool:
    """A loopback client that addressed a loopback host: without an admin token, only such a
    request may reload (a web page whose DNS name was rebound to 127.0.0.1 sends its own Host)."""
    client = getattr(getattr(request, "client", None), "host", "") or ""
    host = request.headers.get("host", "").rsplit(":", 1)[0].strip("[]")  # type: ignore[attr-defined]
    return is_loopback(client) and is_loopback(host)


def check(ctx: bentoml.Context, settings: Settings, route: str) -> None:
    """403 without the admin token (or, with none set, from another machine); 415 for a body that
    is not JSON (a cross-site form or text/plain POST needs no CORS preflight)."""
    token, given = settings.admin_token, ctx.request.headers.get("x-admin-token", "")
    # constant time; the server decoded the header's bytes as latin-1, the token is UTF-8 text
    if token and not hmac.compare_digest(given.encode("latin-1", "replace"), token.encode()):
        raise BentoMLException("missing or wrong X-Admin-Token header", error_code=HTTPStatus.FORBIDDEN)
    if not token and not _from_this_machine(ctx.request):
        raise BentoMLException(
            "without CLIP_HAR_ADMIN_TOKEN, admin calls come from this machine only", error_code=HTTPStatus.FORBIDDEN
        )
    if ctx.request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise BentoMLException(
            f"POST {route} takes a JSON body (Content-Type: application/json)",
            error_code=HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
        )


def refusal(exc: BentoMLException) -> BentoMLException:
    """The batched worker's 4xx ("Error making request: <status>: <its body>") as the caller's
    400 with the worker's reason; a 5xx stays what it is."""
    if exc.error_code >= 500:
        return exc
    body = re.sub(r"^Error making request: \d+: ", "", str(exc))
    return InvalidArgument(error_message(exc.error_code, body.encode()))
