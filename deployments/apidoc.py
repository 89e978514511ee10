"""The API's documentation: the OpenAPI document at `/docs.json` and the Swagger UI page at `/`.

The document BentoML generates is rewritten (`document`) to say what the service enforces: the
error shape, every refusal per route, the limits, which fields a form takes. Its `info` is
ours: BentoML 1.4 puts a placeholder there when the service runs from a working tree
(`# clip-har:dev`, badges from img.shields.io and others, Slack and Twitter links) and takes
the Bento's README only inside a built Bento; here it is deployments/API.md (also the Bento's
description, bentofile.yaml) plus the limits in force. BentoML's index page loads Google Tag
Manager; ours is the same Swagger UI assets (served from /static_content) with nothing fetched
from another host.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

from clip_har.serving.asgi import ASGIApp, Receive, Scope, Send
from clip_har.serving.errors import publish_errors
from clip_har.settings import Settings, env_name

API_MD = Path(__file__).with_name("API.md")
TITLE = "clip-har"

# BentoML's main-openapi.html without the tag manager and the GitHub corner; the Swagger UI
# validator badge (an image from validator.swagger.io) is turned off.
INDEX_HTML = b"""<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>clip-har API</title>
    <link rel="stylesheet" type="text/css" href="./static_content/swagger-ui.css" />
    <link rel="stylesheet" type="text/css" href="./static_content/index.css" />
    <link rel="icon" type="image/png" href="./static_content/favicon-light-32x32.png" sizes="32x32" />
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="./static_content/swagger-ui-bundle.js" charset="UTF-8"></script>
    <script src="./static_content/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
    <script>
      window.onload = function () {
        window.ui = SwaggerUIBundle({
          url: "./docs.json",
          dom_id: "#swagger-ui",
          deepLinking: true,
          validatorUrl: null,
          presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
          layout: "StandaloneLayout",
        });
      };
    </script>
  </body>
</html>
"""


_FORM_REFUSALS = {
    400: "Bad input, named",
    413: "Body over the route's limit",
    415: "Not a multipart/form-data body",
    503: "Busy: retry after Retry-After",
}
REFUSALS = {  # what each route may answer besides 200
    **{path: _FORM_REFUSALS for path in ("/predict", "/classify", "/predict_video")},
    "/explain": {
        **_FORM_REFUSALS,
        400: "Bad input, or a label the model does not have",
        409: "The model was stored without PyTorch weights",
    },
    "/feedback": {
        **_FORM_REFUSALS,
        400: "Bad input, or a label the model does not have",
        409: "The review queue is off",
        503: "Busy, or the review queue is full or cannot be written: retry after Retry-After",
    },
    "/admin/reload": {
        400: "Malformed tag, or a model that does not run",
        403: "Missing or wrong X-Admin-Token",
        404: "No such model in the store",
        415: "Not a JSON body",
    },
    "/admin/shadow": {
        400: "Malformed tag, the served model, or a model that does not run",
        403: "Missing or wrong X-Admin-Token",
        404: "No such model in the store",
        415: "Not a JSON body",
    },
}
LIMITS = (  # the settings API.md names, with the values this server enforces
    "max_files",
    "max_file_mb",
    "max_pixels",
    "max_labels",
    "max_label_chars",
    "max_video_mb",
    "max_frames",
    "max_inflight",
    "max_explain",
    "max_queue",
    "infer_timeout_s",
    "retry_after_s",
)


def document(spec: dict[str, Any], settings: Settings, forms: tuple[str, ...], labels: list[str]) -> dict[str, Any]:
    """The published document: `forms` are the multipart routes; `labels` the served model's."""
    for item in spec["paths"].values():
        for content in item.get("post", {}).get("requestBody", {}).get("content", {}).values():
            content["schema"]["additionalProperties"] = False  # forms.py refuses unknown fields
    form = {path: spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"] for path in forms}
    fields = {path: form[path]["schema"]["properties"] for path in forms}
    for path in forms:
        spec["paths"][path]["post"]["requestBody"]["required"] = True
    for path in ("/predict", "/classify"):
        fields[path]["images"].update(minItems=1, maxItems=settings.max_files)
        form[path].setdefault("encoding", {})["images"] = {"contentType": "image/*"}
    form["/predict_video"].setdefault("encoding", {})["video"] = {"contentType": "video/*"}
    for path in ("/explain", "/feedback"):
        form[path].setdefault("encoding", {})["image"] = {"contentType": "image/*"}
    fields["/feedback"]["label"].update(enum=labels, description="The right label: one of GET /model's labels")
    fields["/classify"]["labels"].update(minItems=1, maxItems=settings.max_labels)
    form["/classify"]["encoding"]["labels"] = {"contentType": "text/plain"}  # one part per label (or a JSON array)
    fields["/classify"]["labels"]["items"].update(minLength=1, maxLength=settings.max_label_chars, pattern=r"\S")
    fields["/predict"]["top_k"]["minimum"] = 1
    fields["/predict_video"]["fps"].update(minimum=0, exclusiveMinimum=True, maximum=60)
    # multipart cannot tell an absent field from an empty one: empty means "the predicted label"
    fields["/explain"]["label"].update(
        enum=["", *labels], description="One of GET /model's labels; empty: the predicted one"
    )
    # a JSON body, even `{}`; the model tag in BentoML's grammar (name[:version], each <= 63 characters)
    part = "[a-z0-9](?:[-._a-z0-9]{0,61}[a-z0-9])?"
    for path, empty in (("/admin/reload", ""), ("/admin/shadow", "^$|")):  # an empty tag stops the shadow
        body = spec["paths"][path]["post"]["requestBody"]
        body["required"] = True
        body["content"]["application/json"]["schema"]["properties"]["model"]["pattern"] = f"{empty}^{part}(?::{part})?$"
    limits = {env_name(name): f"{getattr(settings, name):g}" for name in LIMITS}
    return describe(publish_errors(spec, REFUSALS), limits)


def version(fallback: str) -> str:
    """clip-har's version where the package is installed; inside a Bento (sources only), the
    Bento's own version, which BentoML puts in the document."""
    try:
        return metadata.version(TITLE)
    except metadata.PackageNotFoundError:
        return fallback if fallback and fallback != "None" else "dev"


def describe(spec: dict[str, Any], limits: dict[str, str]) -> dict[str, Any]:
    """`spec` with our title, version and description (API.md, then `limits`: setting → value
    in force on this server)."""
    rows = "\n".join(f"| `{name}` | {value} |" for name, value in limits.items())
    in_force = f"\n\n## Limits on this server\n\n| setting | value |\n|---|---|\n{rows}\n" if limits else ""
    old = spec.get("info", {})
    spec["info"] = {
        "title": TITLE,
        "version": version(str(old.get("version", ""))),
        "description": API_MD.read_text(encoding="utf-8") + in_force,
    }
    return spec


class IndexPage:
    """Answers GET (and HEAD) `/` with INDEX_HTML, before BentoML's own index route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != "/" or scope.get("method") not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        headers = [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(INDEX_HTML)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else INDEX_HTML})
