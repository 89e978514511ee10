"""service-reload: the running service switches to the newly promoted champion
(triggered by `clip-har.model.promoted`; requests in flight finish on the previous model)."""

from __future__ import annotations

from prefect import flow

from clip_har.settings import load_settings
from tasks.serving import switch_service


@flow(name="service-reload", log_prints=True)
def service_reload(bento_model: str | None = None, url: str = "") -> dict:
    """`bento_model`: the promoted model's BentoML tag (default: the newest of the `model_name`
    setting); `url`: the service (default: the `service_url` setting, else 127.0.0.1:<port>)."""
    if bento_model == "":  # what the promotion event carries when the model was not packaged
        raise ValueError("the promoted model was not packaged (export disabled?): nothing to serve")
    settings = load_settings()
    return switch_service(url or settings.service, bento_model or f"{settings.model_name}:latest")
