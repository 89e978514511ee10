"""The retraining policy: whether an event-triggered training run goes ahead or stands down.

A burst of drift/data events must give one retraining run. An event-triggered run stands down
when another training run is active, or another event-triggered one started within the cooldown.
Finished manual or scheduled runs do not count: they did not see the data or the drift the event
reports. Of two runs started together, the older goes ahead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from clip_har.settings import TRIGGER_REASONS


@dataclass(frozen=True)
class TrainingRun:
    id: str
    created: datetime
    state: str  # the orchestrator's state type: PENDING, RUNNING, COMPLETED, ...
    reason: str  # the run's `reason` parameter


def is_event_triggered(reason: object) -> bool:
    """A run started by an automation: its `reason` names the event (settings.TRIGGER_REASONS)."""
    return str(reason or "").startswith(TRIGGER_REASONS)


def window_start(cooldown_s: float, now: datetime | None = None) -> datetime:
    """Runs started after this count as recent."""
    return (now or datetime.now(UTC)) - timedelta(seconds=max(cooldown_s, 0))


def blocking_run(
    reason: str, me: TrainingRun | None, active: Iterable[TrainingRun], recent: Iterable[TrainingRun]
) -> TrainingRun | None:
    """The run this one (`me`, with `reason`) should stand down for, or None to go ahead.
    `active`: training runs pending or running; `recent`: those started within the cooldown."""
    if not is_event_triggered(reason):
        return None
    recent_events = [r for r in recent if r.state in ("RUNNING", "COMPLETED") and is_event_triggered(r.reason)]
    others = [r for r in [*active, *recent_events] if me is None or (r.id != me.id and r.created < me.created)]
    return others[0] if others else None
