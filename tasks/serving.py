"""Serving tasks: switch the running service to a newly promoted model."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from clip_har.serving.client import switch_model


@task(name="switch-service-model", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def switch_service(url: str, bento_model: str) -> dict:
    result = switch_model(url, bento_model)
    get_run_logger().info("service at %s now serves %s (was %s)", url, result["model_version"], result["previous"])
    return result
