"""De-duplication of event-triggered training: a burst of drift/data events yields one run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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
from prefect.client.schemas.objects import StateType
from prefect.runtime import flow_run

EVENT_REASONS = ("drift alert", "new data")


@task(name="dedupe-trigger", cache_policy=NO_CACHE)
def recent_training(reason: str, min_interval_s: float, flow_name: str = "training-pipeline") -> str | None:
    """For event-triggered runs: the id of another training run that is running, or that started
    within the minimum interval (so this one should stand down); None to go ahead."""
    if not reason.startswith(EVENT_REASONS) or min_interval_s <= 0:
        return None
    since = datetime.now(UTC) - timedelta(seconds=min_interval_s)
    states = FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.COMPLETED, StateType.PENDING])
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since), state={"type": states}),
        )
    others = [r for r in runs if str(r.id) != str(flow_run.id)]
    if others:
        get_run_logger().info("training run %s started %s; standing down", others[0].id, others[0].start_time)
        return str(others[0].id)
    return None
