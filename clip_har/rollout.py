"""Shadow rollout: a model that passed the gate scores live traffic beside the champion (the
service does the scoring) before the `champion` alias moves to it.

A rollout is one small state file under `<state>/rollout/` (the service keeps its shadow log in
`shadow/` beside it): which challenger, against which champion, with which thresholds (the
training run's `rollout` config, so the worker's profile cannot change a running rollout's
rules), and how it ended. `decide` turns the service's shadow figures and the challenger's
accuracy on people-labelled review images into promote / abort / wait; `should_roll_back` tells
the drift monitor when a promotion must be undone. The moves themselves (registry aliases and
this state) happen under the model-registry lock, like registration.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from clip_har.config import RolloutConfig
from clip_har.locks import file_lock
from clip_har.registry import champion_version
from clip_har.rollout_registry import (
    abort_challenger,
    challenger_version,
    promote_challenger,
    roll_back,
    version_tags,
)
from clip_har.settings import StateDir
from clip_har.tracking import client

if TYPE_CHECKING:
    from clip_har.monitoring.drift import DriftResult
    from clip_har.serving.predictor import Predictor

STATE_FILE = "state.json"
SHADOW, PROMOTED, ABORTED, ROLLED_BACK = "shadow", "promoted", "aborted", "rolled_back"


class RolloutError(RuntimeError):
    """No rollout in the state a command needs; the message is one line for the user."""


@dataclass(frozen=True)
class Rollout:
    model_name: str
    challenger_version: str
    challenger_bento: str  # the BentoML tag the service shadows (and serves once promoted)
    challenger_backend: str
    champion_version: str  # the champion the challenger was gated against (the CAS of the promotion)
    champion_bento: str  # what the service serves again after a rollback
    config: dict  # the training run's RolloutConfig
    started: float
    status: str = SHADOW  # shadow | promoted | aborted | rolled_back
    promoted_at: float | None = None
    ended_at: float | None = None
    reason: str = ""

    @property
    def rules(self) -> RolloutConfig:
        return RolloutConfig(**self.config)


def load_rollout(folder: Path) -> Rollout | None:
    """The current (or last) rollout under `folder` (StateDir.rollout); None if there never was one."""
    path = Path(folder) / STATE_FILE
    return Rollout(**json.loads(path.read_text())) if path.is_file() else None


def save_rollout(folder: Path, rollout: Rollout) -> Rollout:
    """Written whole or not at all (a reader never sees half a file)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{STATE_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(asdict(rollout), indent=2))
    os.replace(tmp, folder / STATE_FILE)
    return rollout


def in_shadow(state: StateDir, bento_model: str = "") -> Rollout:
    """The rollout in progress (of `bento_model`, when given); RolloutError says why there is none."""
    rollout = load_rollout(state.rollout)
    if rollout is None:
        raise RolloutError("no rollout yet: a gated model shadows the champion when rollout.shadow_requests > 0")
    if rollout.status != SHADOW:
        raise RolloutError(f"no rollout in progress: the last one (v{rollout.challenger_version}) {_ended(rollout)}")
    if bento_model and bento_model != rollout.challenger_bento:
        raise RolloutError(
            f"{bento_model} is not the challenger in shadow ({rollout.challenger_bento}): a stale event?"
        )
    return rollout


def _ended(rollout: Rollout) -> str:
    return f"was {rollout.status.replace('_', ' ')}" + (f" ({rollout.reason})" if rollout.reason else "")


# --- deciding -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewedScore:
    """The challenger on the review queue's labelled images (people's labels of live traffic)."""

    n: int
    accuracy: float | None
    champion_accuracy: float | None  # the served model's, as it predicted those images then
    unreadable: int = 0


@dataclass(frozen=True)
class Decision:
    action: Literal["promote", "abort", "wait"]
    reasons: list[str] = field(default_factory=list)


def decide(stats: dict, reviewed: ReviewedScore | None, cfg: RolloutConfig) -> Decision:
    """`stats`: the service's GET /shadow. Wait until `shadow_requests` requests were tried
    (scored or failed: a challenger that fails every request is judged too); then promote if
    every rule holds, else abort with the rules that failed. Too few labelled review images
    leave their rule unjudged, and the decision says so."""
    scored, errors = int(stats.get("requests") or 0), int(stats.get("errors") or 0)
    tried = scored + errors
    if tried < cfg.shadow_requests:
        return Decision("wait", [f"{tried} of {cfg.shadow_requests} shadow requests so far"])
    passed, failed = [], []

    def rule(ok: bool, text: str) -> None:
        (passed if ok else failed).append(text)

    agreement = stats.get("agreement")
    if agreement is None:
        failed.append("agreement: no image was scored by both models")
    else:
        rule(agreement >= cfg.min_agreement, f"agreement {agreement:.3f} (min {cfg.min_agreement})")
    rate = errors / tried if tried else 0.0
    rule(rate <= cfg.max_error_rate, f"challenger errors {errors} of {tried} requests (max {cfg.max_error_rate:.1%})")
    n = reviewed.n if reviewed else 0
    if reviewed is None or reviewed.accuracy is None or n < cfg.min_reviewed:
        passed.append(f"reviewed accuracy not judged: {n} labelled review image(s), {cfg.min_reviewed} needed")
    else:
        ok = reviewed.accuracy >= cfg.min_reviewed_accuracy
        rule(ok, f"reviewed accuracy {reviewed.accuracy:.3f} on {n} images (min {cfg.min_reviewed_accuracy})")
    return Decision("abort", failed) if failed else Decision("promote", passed)


def judge(rollout: Rollout, stats: dict, reviewed: ReviewedScore | None, force: bool = False) -> Decision:
    """This rollout's decision: `decide` on its own rules, unless the service shadows some other
    model (its figures are not this challenger's: wait), or `force` (promote whatever the rules
    say; the reasons keep what they said)."""
    shadowed = stats.get("challenger")
    other = (
        []
        if shadowed == rollout.challenger_bento
        else [f"the service shadows {shadowed or 'no model'}, not the rollout's {rollout.challenger_bento}"]
    )
    if force:
        said = decide(stats, reviewed, rollout.rules)
        return Decision("promote", [f"forced by hand; the rules said {said.action}", *other, *said.reasons])
    if other:
        again = "`prefect deployment run rollout-start/rollout-start` shadows it again"
        return Decision("wait", [f"{other[0]}: nothing decided; {again}"])
    return decide(stats, reviewed, rollout.rules)


def challenger_reviewed(state: StateDir, rollout: Rollout) -> ReviewedScore:
    """`reviewed_accuracy` of the rollout's challenger (its exported model, fetched once into the
    cache) on the review queue, with the backend it will serve with."""
    from clip_har.export.onnx_export import ONNX_META
    from clip_har.pipeline.rundir import ONNX
    from clip_har.registry import version_artifact
    from clip_har.serving.predictor import Predictor

    c = client(state.mlflow_uri)
    onnx_dir = version_artifact(
        c, rollout.model_name, rollout.challenger_version, state.cache / "challenger", ONNX, ONNX_META
    )
    return reviewed_accuracy(state.review, Predictor(onnx_dir, rollout.challenger_backend))


def reviewed_accuracy(review_dir: Path, predictor: Predictor, batch_size: int = 32) -> ReviewedScore:
    """The challenger's accuracy on the labelled review items not yet exported: exported ones
    went to ingestion and may be in its training data. Unreadable images are counted apart."""
    import numpy as np

    from clip_har.monitoring.review import LABELLED, ReviewQueue

    queue = ReviewQueue(review_dir)
    arrays, labels, served, unreadable = [], [], [], 0
    for item in (i for i in queue.items(LABELLED) if not i.exported and i.label):
        try:
            arrays.append(predictor.decode(queue.image(item, LABELLED).read_bytes()))
        except (OSError, ValueError):
            unreadable += 1
            continue
        labels.append(item.label)
        served.append(item.predicted)
    if not labels:
        return ReviewedScore(0, None, None, unreadable)
    predicted = [
        p.label
        for start in range(0, len(arrays), batch_size)
        for p in predictor.predict(np.stack(arrays[start : start + batch_size]), top_k=1)
    ]
    right = sum(p == y for p, y in zip(predicted, labels, strict=True))
    champion_right = sum(p == y for p, y in zip(served, labels, strict=True))
    return ReviewedScore(len(labels), right / len(labels), champion_right / len(labels), unreadable)


def decision_markdown(rollout: Rollout, stats: dict, reviewed: ReviewedScore | None, decision: Decision) -> str:
    """The figures behind a decision (the rollout-decide flow's artifact)."""

    def fmt(value: object) -> str:
        return f"{value:.3f}" if isinstance(value, float) else ("—" if value is None else str(value))

    cfg = rollout.rules
    rows = [
        ("shadow requests scored", stats.get("requests"), f"{cfg.shadow_requests} tried"),
        ("challenger errors", stats.get("errors"), f"≤ {cfg.max_error_rate:.1%}"),
        ("requests skipped (load, switch)", stats.get("skipped"), ""),
        ("images compared", stats.get("images"), ""),
        ("top-1 agreement", stats.get("agreement"), f"≥ {cfg.min_agreement}"),
        ("champion mean confidence", stats.get("champion_confidence"), ""),
        ("challenger mean confidence", stats.get("challenger_confidence"), ""),
        ("labelled review images", reviewed.n if reviewed else None, f"≥ {cfg.min_reviewed} to judge"),
        ("challenger reviewed accuracy", reviewed.accuracy if reviewed else None, f"≥ {cfg.min_reviewed_accuracy}"),
        ("champion reviewed accuracy", reviewed.champion_accuracy if reviewed else None, "as served"),
    ]
    lines = [
        f"### Rollout of v{rollout.challenger_version} beside champion v{rollout.champion_version}: "
        f"**{decision.action.upper()}**",
        "",
        f"challenger `{rollout.challenger_bento}`, champion `{rollout.champion_bento}`",
        "",
        "| figure | value | rule |",
        "|---|---|---|",
        *(f"| {name} | {fmt(value)} | {limit} |" for name, value, limit in rows),
        "",
        *(f"- {r}" for r in decision.reasons),
    ]
    return "\n".join(lines)


def should_roll_back(
    rollout: Rollout | None, drift: DriftResult, now: float, cfg: RolloutConfig, champion: str | None = None
) -> str | None:
    """Why the champion must go back to the one before it, or None: it was promoted by a rollout
    less than `rollback_window_s` ago, is still champion (`champion`: the version the drift
    check judged, when known), and its predictions drifted from its own reference window."""
    if rollout is None or rollout.status != PROMOTED or rollout.promoted_at is None:
        return None
    if champion is not None and champion != rollout.challenger_version:
        return None
    elapsed = now - rollout.promoted_at
    if elapsed > cfg.rollback_window_s or not drift.drifted.get("prediction"):
        return None
    score, limit = drift.scores.get("prediction", float("nan")), drift.thresholds.get("prediction", float("nan"))
    return (
        f"prediction drift {score:.3f} > {limit:.3f} on {drift.n_current} predictions, "
        f"{elapsed / 3600:.1f} h after v{rollout.challenger_version} was promoted"
    )


# --- the moves (registry aliases + this state, under the model-registry lock) ---------------


def begin(state: StateDir, name: str, version: str, gated_against: str, cfg: RolloutConfig) -> Rollout:
    """The rollout of challenger `version` (registered and packaged by the training pipeline).
    RolloutError if a newer registration replaced it meanwhile (two runs packaging at once): the
    state then stays the newer one's."""
    c = client(state.mlflow_uri)
    mine, theirs = version_tags(c, name, version), version_tags(c, name, gated_against)
    with file_lock(state.model_lock):
        now = challenger_version(c, name), champion_version(c, name)
        if now != (version, gated_against):
            raise RolloutError(
                f"v{version} is no longer the challenger beside champion v{gated_against}"
                f" (the registry names challenger {now[0] or 'none'}, champion {now[1] or 'none'}): no rollout started"
            )
        rollout = Rollout(
            model_name=name,
            challenger_version=version,
            challenger_bento=mine.get("lineage.bento_model", ""),
            challenger_backend=mine.get("lineage.serve_backend", "onnx"),
            champion_version=gated_against,
            champion_bento=theirs.get("lineage.bento_model", ""),
            config=cfg.model_dump(),
            started=time.time(),
        )
        return save_rollout(state.rollout, rollout)


def end_replaced(state: StateDir, version: str, reason: str) -> None:
    """A newer registration ended challenger `version`'s rollout: its state says so. The caller
    holds the model-registry lock (the registration's)."""
    rollout = load_rollout(state.rollout)
    if rollout is not None and rollout.status == SHADOW and rollout.challenger_version == version:
        save_rollout(state.rollout, replace(rollout, status=ABORTED, ended_at=time.time(), reason=reason))


def _still(state: StateDir, rollout: Rollout, status: str) -> Rollout:
    """`rollout` as the state file says now (under the lock): RolloutError if another process
    has moved it on meanwhile (a person beside the schedule)."""
    now = load_rollout(state.rollout)
    if now is None or now.challenger_version != rollout.challenger_version or now.status != status:
        raise RolloutError(f"the rollout of v{rollout.challenger_version} changed meanwhile: {_ended(now or rollout)}")
    return now


def promote(state: StateDir, rollout: Rollout, reason: str) -> Rollout:
    """The champion alias moves to the challenger (ChampionMoved if the champion is no longer the
    one it was gated against; nothing changes then). The drift monitor's next window starts
    now: the new champion is judged on its own predictions, against its own reference."""
    from clip_har.monitoring.monitor import start_window

    c = client(state.mlflow_uri)
    with file_lock(state.model_lock):
        rollout = _still(state, rollout, SHADOW)
        promote_challenger(c, rollout.model_name, rollout.challenger_version, rollout.champion_version)
        now = time.time()
        rollout = save_rollout(
            state.rollout, replace(rollout, status=PROMOTED, promoted_at=now, ended_at=now, reason=reason)
        )
    start_window(state.reports, now)
    return rollout


def abort(state: StateDir, rollout: Rollout, reason: str) -> Rollout:
    """The challenger alias goes, the version is tagged "aborted" with the reason; the champion
    is untouched."""
    c = client(state.mlflow_uri)
    with file_lock(state.model_lock):
        rollout = _still(state, rollout, SHADOW)
        abort_challenger(c, rollout.model_name, rollout.challenger_version, reason)
        return save_rollout(state.rollout, replace(rollout, status=ABORTED, ended_at=time.time(), reason=reason))


def roll_back_promotion(state: StateDir, rollout: Rollout, reason: str) -> Rollout:
    """The champion alias goes back to the champion the rollout replaced (ChampionMoved if the
    promoted model is no longer champion); the drift window restarts, as after a promotion."""
    from clip_har.monitoring.monitor import start_window

    c = client(state.mlflow_uri)
    with file_lock(state.model_lock):
        rollout = _still(state, rollout, PROMOTED)
        roll_back(c, rollout.model_name, rollout.challenger_version, rollout.champion_version, reason)
        rollout = save_rollout(state.rollout, replace(rollout, status=ROLLED_BACK, ended_at=time.time(), reason=reason))
    start_window(state.reports)
    return rollout


def roll_back_if_drifted(state: StateDir, name: str, drift: DriftResult, champion: str) -> Rollout | None:
    """After a drift check of `name`'s `champion`: the rollout, rolled back, if `should_roll_back` says so."""
    rollout = load_rollout(state.rollout)
    mine = rollout is not None and rollout.model_name == name
    reason = should_roll_back(rollout, drift, time.time(), rollout.rules, champion) if rollout and mine else None
    return roll_back_promotion(state, rollout, reason) if rollout and reason else None


def registry_view(state: StateDir, name: str) -> dict[str, str | None]:
    """The aliases as the registry holds them now (for `clip-har rollout status`)."""
    if not state.has_registry:
        return {"champion": None, "challenger": None}
    c = client(state.mlflow_uri)
    return {"champion": champion_version(c, name), "challenger": challenger_version(c, name)}
