"""De-duplication of event-triggered training: a burst of drift/data events yields one run."""

from __future__ import annotations

import os
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
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.runtime import flow_run

EVENT_REASONS = ("drift alert", "new data")
COOLDOWN_ENV, DEFAULT_COOLDOWN_S = "CLIP_HAR_RETRAIN_COOLDOWN_S", 1800.0


def cooldown_s() -> float:
    """The retraining cooldown: env CLIP_HAR_RETRAIN_COOLDOWN_S, else 30 min."""
    return float(os.environ.get(COOLDOWN_ENV, DEFAULT_COOLDOWN_S))


def event_triggered(run: FlowRun) -> bool:
    """A training run started by an automation (its `reason` parameter names the event)."""
    return str((run.parameters or {}).get("reason", "")).startswith(EVENT_REASONS)


@task(name="dedupe-trigger", cache_policy=NO_CACHE)
def recent_training(reason: str, min_interval_s: float | None, flow_name: str = "training-pipeline") -> str | None:
    """For event-triggered runs: the id of another training run that is running, or of another
    event-triggered one that started within the minimum interval (the cooldown), so this one
    should stand down; None to go ahead. Finished manual or scheduled runs do not count: they
    did not see the data or the drift this event reports."""
    if not reason.startswith(EVENT_REASONS):
        return None
    since = datetime.now(UTC) - timedelta(seconds=max(cooldown_s() if min_interval_s is None else min_interval_s, 0))
    flows = FlowFilter(name=FlowFilterName(any_=[flow_name]))
    with get_client(sync_client=True) as client:
        active = client.read_flow_runs(
            flow_filter=flows,
            flow_run_filter=FlowRunFilter(
                state={"type": FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])}
            ),
        )
        recent = client.read_flow_runs(
            flow_filter=flows, flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since))
        )
        me = client.read_flow_run(flow_run.id) if flow_run.id else None
    counted = (StateType.RUNNING, StateType.COMPLETED)
    recent_events = [r for r in recent if r.state_type in counted and event_triggered(r)]
    # only runs created before this one count: of two runs started together, the older goes ahead
    others = [
        r for r in [*active, *recent_events] if str(r.id) != str(flow_run.id) and (me is None or r.created < me.created)
    ]
    if others:
        get_run_logger().info("training run %s started %s; standing down", others[0].id, others[0].start_time)
        return str(others[0].id)
    return None
