"""service-reload: the running service switches to the newly promoted champion
(triggered by `clip-har.model.promoted`; requests in flight finish on the previous model)."""

from __future__ import annotations

from prefect import flow

from clip_har.serving.client import service_url
from tasks.serving import switch_service


@flow(name="service-reload", log_prints=True)
def service_reload(bento_model: str, url: str = "") -> dict:
    """`bento_model`: the promoted model's BentoML tag; `url`: the service (default
    CLIP_HAR_SERVICE_URL, else 127.0.0.1:CLIP_HAR_PORT)."""
    if not bento_model:
        raise ValueError("the promoted model was not packaged (export disabled?): nothing to serve")
    return switch_service(url or service_url(), bento_model)


if __name__ == "__main__":
    service_reload("clip-har:latest")
