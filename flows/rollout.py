"""Shadow rollout: rollout-start (on `clip-har.model.challenger`: the service shadows the
challenger), rollout-decide (on a schedule, or `clip-har rollout promote`: promote / abort /
wait on the shadow figures), rollout-abort (`clip-har rollout abort`). A promotion emits
`clip-har.model.promoted`, so the service-reload deployment switches the service, as after a
training run; the rollback lives in drift-monitor."""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow

from clip_har.rollout import SHADOW
from clip_har.settings import load_settings
from tasks.rollout import (
    abort_rollout,
    announce_champion,
    judge_rollout,
    last_rollout,
    promote_rollout,
    report_decision,
    rollout_in_shadow,
    score_reviewed,
    shadow_model,
    shadow_stats,
)


@flow(name="rollout-start", log_prints=True)
def rollout_start(bento_model: str = "", url: str = "") -> dict:
    """`bento_model`: the challenger the event announced (checked against the rollout in
    progress; empty: that rollout's). `url`: the service (default: the `service_url` setting)."""
    settings = load_settings()
    rollout = rollout_in_shadow(settings.state, bento_model)
    return shadow_model(url or settings.service, rollout.challenger_bento)


@flow(name="rollout-decide", log_prints=True)
def rollout_decide(url: str = "", force: bool = False, abort_on_failure: bool = True) -> dict:
    """Decide once enough shadow requests were scored. `force`: promote whatever the rules say
    (by hand). `abort_on_failure=False`: a failed rule reports without aborting (what
    `clip-har rollout promote` asks). A failure (service unreachable, champion moved) fails the
    run and changes nothing."""
    settings = load_settings()
    state, url = settings.state, url or settings.service
    rollout = last_rollout(state)
    if rollout is None or rollout.status != SHADOW:
        return {"action": "none", "acted": False, "reasons": ["no rollout in progress"]}
    stats = shadow_stats(url)
    reviewed, decision = None, judge_rollout(rollout, stats, None, force)
    if decision.action != "wait":  # the review images are scored only when it counts
        reviewed = score_reviewed(state, rollout)
        decision = judge_rollout(rollout, stats, reviewed, force)
    report_decision(rollout, stats, reviewed, decision)
    event = None
    if decision.action == "promote":
        rollout = promote_rollout(state, rollout, decision.reasons)
        event = announce_champion(rollout.model_name, rollout.challenger_version, rollout.challenger_bento, "rollout")
    elif decision.action == "abort" and abort_on_failure:
        shadow_model(url, "")  # the service first: if it cannot stop, nothing else changes
        rollout = abort_rollout(state, rollout, "; ".join(decision.reasons))
    return {
        "action": decision.action,
        "acted": rollout.status != SHADOW,
        "reasons": decision.reasons,
        "shadow": stats,
        "reviewed": asdict(reviewed) if reviewed else None,
        "rollout": asdict(rollout),
        "event_id": event,
    }


@flow(name="rollout-abort", log_prints=True)
def rollout_abort(reason: str = "aborted by hand", url: str = "") -> dict:
    """End the rollout in progress: the service stops shadowing (if it cannot be reached, the
    abort goes on and the result says so), the challenger alias goes, the reason is recorded."""
    settings = load_settings()
    rollout = rollout_in_shadow(settings.state)
    # once: a person is waiting, and the abort goes on either way
    stopped = shadow_model.with_options(retries=0)(url or settings.service, "", return_state=True)
    rollout = abort_rollout(settings.state, rollout, reason)
    warning = None if stopped.is_completed() else f"the service still shadows it: {stopped.message}"
    return {"rollout": asdict(rollout), "shadow_stopped": stopped.is_completed(), "warning": warning}
