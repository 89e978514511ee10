"""Config and run-directory tasks."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from clip_har.config import PipelineConfig, load_config
from clip_har.stages import new_run_dir
from clip_har.state import StateDir


@task(name="resolve-config", cache_policy=NO_CACHE)
def resolve_config(profile: str, overrides: list[str]) -> PipelineConfig:
    return load_config(profile, overrides)


@task(name="start-run", cache_policy=NO_CACHE)
def start_run(state: StateDir) -> Path:
    return new_run_dir(state)
