"""De-duplication of event-triggered training: a burst of drift/data events yields one run.
The policy is `clip_har.retrain`; this task only asks the Prefect API for the runs it judges."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterStartTime,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.runtime import flow_run

from clip_har.retrain import TrainingRun, blocking_run, is_event_triggered, window_start
from clip_har.settings import load_settings


def as_training_run(run: FlowRun) -> TrainingRun:
    state = run.state_type.value if run.state_type else ""
    return TrainingRun(str(run.id), run.created, state, str((run.parameters or {}).get("reason", "")))


@task(name="dedupe-trigger", cache_policy=NO_CACHE)
def recent_training(reason: str, min_interval_s: float | None, flow_name: str = "training-pipeline") -> str | None:
    """The id of the training run this event-triggered run should stand down for (see
    `clip_har.retrain`), or None to go ahead. `min_interval_s`: the cooldown (default: setting)."""
    if not is_event_triggered(reason):
        return None
    cooldown = load_settings().retrain_cooldown_s if min_interval_s is None else min_interval_s
    flows = FlowFilter(name=FlowFilterName(any_=[flow_name]))
    with get_client(sync_client=True) as client:
        active = client.read_flow_runs(
            flow_filter=flows,
            flow_run_filter=FlowRunFilter(
                state={"type": FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])}
            ),
        )
        recent = client.read_flow_runs(
            flow_filter=flows,
            flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=window_start(cooldown))),
        )
        me = client.read_flow_run(flow_run.id) if flow_run.id else None
    other = blocking_run(
        reason,
        as_training_run(me) if me else None,
        map(as_training_run, active),
        map(as_training_run, recent),
    )
    if other:
        get_run_logger().info(
            "training run %s (created %s) is running or recent; standing down", other.id, other.created
        )
        return other.id
    return None
