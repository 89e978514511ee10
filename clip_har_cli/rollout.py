"""`clip-har rollout status|promote|abort`: the shadow rollout by hand (clip_har.rollout).

`promote` and `abort` run the rollout-decide / rollout-abort flows, on the stack's Prefect
server when it is up (their runs, artifacts and events show there), else in ephemeral mode; a
promotion then switches the service itself, as no service-reload deployment hears the event.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Annotated

import typer

rollout_app = typer.Typer(
    help="Shadow rollouts: a gated model scores live traffic beside the champion before it takes over.",
    no_args_is_help=True,
)


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else "—"


def _num(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else ("—" if value is None else str(value))


def _in_shadow():  # the Rollout in progress, or exit 1 with the reason
    from clip_har.rollout import RolloutError, in_shadow
    from clip_har_cli.main import _settings, fail

    try:
        return in_shadow(_settings().state)
    except RolloutError as exc:
        fail(str(exc))


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@rollout_app.command("status")
def status(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False) -> None:
    """The rollout, the registry's aliases and the service's live shadow figures.

    Shows the rollout in progress or the last one; a service that does not answer is reported,
    not an error."""
    from dataclasses import asdict

    from clip_har.rollout import SHADOW, load_rollout, registry_view
    from clip_har.serving.client import ServiceError, shadow_status
    from clip_har_cli.main import _settings

    settings = _settings()
    rollout = load_rollout(settings.state.rollout)
    try:
        shadow: dict = shadow_status(settings.service, timeout=10)
    except ServiceError as exc:
        shadow = {"error": str(exc)}
    aliases = registry_view(settings.state, settings.model_name)
    if as_json:
        typer.echo(json.dumps({"rollout": asdict(rollout) if rollout else None, "registry": aliases, "shadow": shadow}))
        return
    if rollout is None:
        typer.echo("rollout: none yet (a gated model shadows the champion when rollout.shadow_requests > 0)")
    else:
        rules = rollout.rules
        typer.echo(
            f"rollout:  v{rollout.challenger_version} ({rollout.challenger_bento}) beside champion "
            f"v{rollout.champion_version} ({rollout.champion_bento}): {rollout.status}, "
            f"started {_when(rollout.started)}"
            + (f", ended {_when(rollout.ended_at)}" if rollout.status != SHADOW else "")
        )
        typer.echo(
            f"rules:    {rules.shadow_requests} requests, agreement >= {rules.min_agreement}, errors <= "
            f"{rules.max_error_rate:.1%}, reviewed accuracy >= {rules.min_reviewed_accuracy} "
            f"(from {rules.min_reviewed} labelled images); rollback within {rules.rollback_window_s:.0f} s"
        )
        if rollout.reason:
            typer.echo(f"reason:   {rollout.reason}")
    champion, challenger = (f"v{aliases[k]}" if aliases[k] else "none" for k in ("champion", "challenger"))
    typer.echo(f"registry: champion {champion}, challenger {challenger}")
    if "error" in shadow:
        typer.echo(f"service:  {shadow['error']}")
    elif not shadow.get("challenger"):
        typer.echo(f"service:  {settings.service} serves {shadow.get('champion')}, shadows nothing")
    else:
        typer.echo(
            f"service:  {settings.service} shadows {shadow['challenger']} since {_when(shadow.get('since'))}: "
            f"{shadow.get('requests')} requests ({shadow.get('images')} images), agreement "
            f"{_num(shadow.get('agreement'))}, confidence {_num(shadow.get('champion_confidence'))} (champion) vs "
            f"{_num(shadow.get('challenger_confidence'))}, {shadow.get('errors')} errors, "
            f"{shadow.get('skipped')} skipped"
        )


@rollout_app.command("promote")
def promote(
    force: Annotated[
        bool, typer.Option("--force", help="Promote whatever the rules say (the decision records that it was forced)")
    ] = False,
) -> None:
    """Promote the challenger in shadow if the rollout's rules hold (--force: regardless).

    Decides now, as the rollout-decide schedule does; a failed rule (or too few shadow requests)
    is printed and changes nothing (exit 1), where the schedule would abort."""
    from clip_har.serving.client import ServiceError, switch_model
    from clip_har_cli.main import _settings, _state, fail

    _in_shadow()
    _state()  # on the stack's Prefect server when it is up
    from flows.rollout import rollout_decide

    try:
        result = rollout_decide(force=force, abort_on_failure=False)
    except Exception as exc:  # the flow logged the details: service unreachable, champion moved
        fail(f"no decision: {_first_line(exc)}")
    for reason in result["reasons"]:
        typer.echo(f"  - {reason}")
    if result["action"] != "promote":
        fail(f"not promoted ({result['action']}); `--force` promotes anyway, `clip-har rollout abort` ends it")
    rollout = result["rollout"]
    typer.echo(f"promoted: v{rollout['challenger_version']} is champion (was v{rollout['champion_version']})")
    if "PREFECT_API_URL" in os.environ:  # a server: the service-reload deployment switches on the event
        typer.echo(f"the service switches to {rollout['challenger_bento']} (service-reload deployment)")
        return
    settings = _settings()
    try:
        switch_model(settings.service, rollout["challenger_bento"])
    except ServiceError as exc:
        fail(f"promoted, but the service did not switch: {exc}")
    typer.echo(f"service at {settings.service} now serves {rollout['challenger_bento']}")


@rollout_app.command("abort")
def abort(
    reason: Annotated[
        str, typer.Option(help="Why (recorded on the registry version and the rollout)")
    ] = "aborted by hand",
) -> None:
    """End the rollout in progress: the champion stays, the challenger is tagged aborted."""
    from clip_har_cli.main import _state, fail

    if not reason.strip():
        fail("--reason must not be empty", 2)
    _in_shadow()
    _state()
    from flows.rollout import rollout_abort

    try:
        result = rollout_abort(reason=reason)
    except Exception as exc:
        fail(f"not aborted: {_first_line(exc)}")
    rollout = result["rollout"]
    typer.echo(f"aborted: v{rollout['challenger_version']} ({reason}); champion v{rollout['champion_version']} stays")
    if result["warning"]:
        typer.echo(f"warning: {result['warning']}", err=True)
