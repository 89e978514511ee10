"""Shadow-rollout tasks: each wraps one clip_har.rollout (or service client) call."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from clip_har import rollout as lib
from clip_har.config import PipelineConfig
from clip_har.monitoring.drift import DriftResult
from clip_har.registry import Registration
from clip_har.rollout import Decision, ReviewedScore, Rollout
from clip_har.serving.client import set_shadow, shadow_status
from clip_har.settings import CHALLENGER_EVENT, MODEL_RESOURCE, PROMOTED_EVENT, StateDir


@task(name="begin-rollout", cache_policy=NO_CACHE)
def begin_rollout(cfg: PipelineConfig, state: StateDir, reg: Registration) -> Rollout:
    """The packaged challenger's rollout state (its thresholds: this run's `rollout` config)."""
    rollout = lib.begin(state, reg.model_name, reg.version, str(reg.champion_version), cfg.rollout)
    get_run_logger().info(
        "v%s shadows champion v%s until %d requests", reg.version, reg.champion_version, cfg.rollout.shadow_requests
    )
    return rollout


@task(name="announce-challenger", cache_policy=NO_CACHE)
def announce_challenger(rollout: Rollout) -> str:
    """`clip-har.model.challenger`: the rollout-start deployment has the service shadow it."""
    event = emit_event(
        event=CHALLENGER_EVENT,
        resource={"prefect.resource.id": f"{MODEL_RESOURCE}.{rollout.challenger_version}"},
        payload={
            "model_name": rollout.model_name,
            "version": rollout.challenger_version,
            "bento_model": rollout.challenger_bento,
            "champion_version": rollout.champion_version,
        },
    )
    return str(event.id) if event else ""


@task(name="announce-champion", cache_policy=NO_CACHE)
def announce_champion(model_name: str, version: str, bento_model: str, reason: str) -> str:
    """`clip-har.model.promoted` for a champion set by a rollout (promoted or rolled back to):
    the service-reload deployment switches the service to `bento_model`, as after training."""
    event = emit_event(
        event=PROMOTED_EVENT,
        resource={"prefect.resource.id": f"{MODEL_RESOURCE}.{version}"},
        payload={"model_name": model_name, "version": version, "bento_model": bento_model, "reason": reason},
    )
    return str(event.id) if event else ""


@task(name="rollout-in-shadow", cache_policy=NO_CACHE)
def rollout_in_shadow(state: StateDir, bento_model: str = "") -> Rollout:
    return lib.in_shadow(state, bento_model)


@task(name="last-rollout", cache_policy=NO_CACHE)
def last_rollout(state: StateDir) -> Rollout | None:
    return lib.load_rollout(state.rollout)


@task(name="shadow-model", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def shadow_model(url: str, bento_model: str) -> dict:
    """POST /admin/shadow: the service scores `bento_model` in shadow ("" stops)."""
    result = set_shadow(url, bento_model)
    get_run_logger().info("service at %s: challenger %s beside %s", url, result["challenger"], result["champion"])
    return result


@task(name="shadow-stats", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)  # the schedule retries too
def shadow_stats(url: str) -> dict:
    return shadow_status(url)


@task(name="score-reviewed", cache_policy=NO_CACHE)
def score_reviewed(state: StateDir, rollout: Rollout) -> ReviewedScore:
    return lib.challenger_reviewed(state, rollout)


@task(name="judge-rollout", cache_policy=NO_CACHE)
def judge_rollout(rollout: Rollout, stats: dict, reviewed: ReviewedScore | None, force: bool) -> Decision:
    decision = lib.judge(rollout, stats, reviewed, force)
    get_run_logger().info("rollout of v%s: %s %s", rollout.challenger_version, decision.action, decision.reasons)
    return decision


@task(name="report-decision", cache_policy=NO_CACHE)
def report_decision(rollout: Rollout, stats: dict, reviewed: ReviewedScore | None, decision: Decision) -> None:
    create_markdown_artifact(
        lib.decision_markdown(rollout, stats, reviewed, decision),
        key="rollout-decision",
        description="shadow rollout: the figures and the decision",
    )


@task(name="promote-challenger", cache_policy=NO_CACHE)
def promote_rollout(state: StateDir, rollout: Rollout, reasons: list[str]) -> Rollout:
    return lib.promote(state, rollout, "; ".join(reasons))


@task(name="abort-challenger", cache_policy=NO_CACHE)
def abort_rollout(state: StateDir, rollout: Rollout, reason: str) -> Rollout:
    return lib.abort(state, rollout, reason)


@task(name="roll-back-if-drifted", cache_policy=NO_CACHE)
def roll_back_if_drifted(state: StateDir, name: str, result: DriftResult, champion: str) -> Rollout | None:
    rolled = lib.roll_back_if_drifted(state, name, result, champion)
    if rolled is not None:
        get_run_logger().warning("rolled back: champion v%s again (%s)", rolled.champion_version, rolled.reason)
    return rolled
