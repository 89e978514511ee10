"""The registry's side of a shadow rollout: the `challenger` alias and the moves that end a
rollout (promote, abort) or undo one (roll back). Each move is a compare-and-set on the aliases,
made while the caller holds the model-registry lock (clip_har.rollout does), like `register`:
nothing moves between the check and the move."""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from clip_har.registry import CHALLENGER, CHAMPION, ChampionMoved, champion_version

ABORTED, ROLLED_BACK, SUPERSEDED = "aborted", "rolled_back", "superseded"


class ChallengerMoved(RuntimeError):
    """The `challenger` alias no longer names the rollout's model (a newer one replaced it)."""


def challenger_version(c: MlflowClient, name: str) -> str | None:
    try:
        return str(c.get_model_version_by_alias(name, CHALLENGER).version)
    except MlflowException:
        return None


def version_tags(c: MlflowClient, name: str, version: str) -> dict[str, str]:
    return dict(c.get_model_version(name, version).tags)


def _tag(c: MlflowClient, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        c.set_model_version_tag(name, version, key, value[:4000])


def promote_challenger(c: MlflowClient, name: str, version: str, gated_against: str | None) -> None:
    """The champion alias moves to challenger `version` if the champion is still `gated_against`
    (else ChampionMoved) and the challenger is still `version` (else ChallengerMoved); the
    challenger alias goes, the previous champion is "superseded"."""
    if (now := champion_version(c, name)) != gated_against:
        raise ChampionMoved(gated_against, now)
    if (challenger := challenger_version(c, name)) != version:
        raise ChallengerMoved(f"the challenger is now {f'v{challenger}' if challenger else 'none'}, not v{version}")
    c.set_registered_model_alias(name, CHAMPION, version)  # the one switch; the rest is bookkeeping
    c.delete_registered_model_alias(name, CHALLENGER)
    _tag(c, name, version, {"status": CHAMPION})
    if gated_against:
        _tag(c, name, gated_against, {"status": SUPERSEDED})


def abort_challenger(c: MlflowClient, name: str, version: str, reason: str) -> None:
    """Challenger `version` ends its rollout: status "aborted" with the reason; the alias goes
    only if it still names `version` (a newer challenger keeps it). The champion is untouched."""
    if challenger_version(c, name) == version:
        c.delete_registered_model_alias(name, CHALLENGER)
    _tag(c, name, version, {"status": ABORTED, "aborted_because": reason})


def roll_back(c: MlflowClient, name: str, current: str, previous: str, reason: str) -> None:
    """The champion alias goes back from `current` to `previous` if `current` is still champion
    (else ChampionMoved); `current` becomes "rolled_back" with the reason."""
    if (now := champion_version(c, name)) != current:
        raise ChampionMoved(current, now)
    c.set_registered_model_alias(name, CHAMPION, previous)
    _tag(c, name, current, {"status": ROLLED_BACK, "rolled_back_because": reason})
    _tag(c, name, previous, {"status": CHAMPION})
