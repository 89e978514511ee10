"""The retraining policy (clip_har.retrain): a burst of events gives one run; people are never
de-duplicated; only event-triggered runs inside the cooldown, or active runs, count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from clip_har.retrain import TrainingRun, blocking_run, is_event_triggered, window_start
from clip_har.settings import DATA_REASON, DRIFT_REASON

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def run(i: int, state: str, reason: str, minutes: float = 0) -> TrainingRun:
    return TrainingRun(f"r{i}", T0 + timedelta(minutes=minutes), state, reason)


def test_reasons_from_the_automations_are_event_triggered() -> None:
    assert is_event_triggered(f"{DRIFT_REASON}: {{'embedding': 0.9}}")
    assert is_event_triggered(f"{DATA_REASON}: demo-v3")
    assert not is_event_triggered("manual") and not is_event_triggered("scheduled") and not is_event_triggered(None)


def test_two_events_together_the_older_goes_ahead() -> None:
    drift, data = run(1, "RUNNING", f"{DRIFT_REASON}: x"), run(2, "PENDING", f"{DATA_REASON}: v2", 0.01)
    active = [drift, data]
    assert blocking_run(drift.reason, drift, active, []) is None
    assert blocking_run(data.reason, data, active, []) == drift


def test_a_recent_event_run_blocks_but_a_finished_manual_one_does_not() -> None:
    me = run(3, "RUNNING", f"{DRIFT_REASON}: y", 10)
    done_event = run(1, "COMPLETED", f"{DATA_REASON}: v2")
    done_manual = run(2, "COMPLETED", "manual", 5)
    failed_event = run(4, "FAILED", f"{DRIFT_REASON}: z", 5)
    assert blocking_run(me.reason, me, [me], [done_event, done_manual]) == done_event
    assert blocking_run(me.reason, me, [me], [done_manual, failed_event]) is None


def test_people_and_schedules_are_never_stood_down() -> None:
    busy = run(1, "RUNNING", f"{DRIFT_REASON}: x")
    assert blocking_run("manual", run(2, "RUNNING", "manual", 1), [busy], [busy]) is None
    assert blocking_run("scheduled", run(3, "RUNNING", "scheduled", 1), [busy], [busy]) is None


def test_cooldown_window() -> None:
    assert window_start(1800, T0) == T0 - timedelta(minutes=30)
    assert window_start(-1, T0) == T0
