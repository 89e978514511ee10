"""Config and run-directory tasks."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from clip_har.config import PipelineConfig, load_config
from clip_har.pipeline.rundir import RunDir
from clip_har.settings import StateDir


@task(name="resolve-config", cache_policy=NO_CACHE)
def resolve_config(profile: str, overrides: list[str]) -> PipelineConfig:
    return load_config(profile, overrides)


@task(name="start-run", cache_policy=NO_CACHE)
def start_run(state: StateDir) -> RunDir:
    return RunDir.new(state.runs)
