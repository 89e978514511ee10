"""Champion lookups that run before anything was trained (e.g. `clip-har up`, `clip-har serve`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clip_har.registry import champion_bento
from clip_har.settings import load_settings


def test_champion_lookup_without_a_registry_says_why_and_creates_nothing(state_dir: Path) -> None:
    state = load_settings().state
    with pytest.raises(LookupError, match="no champion yet"):
        champion_bento(state, "clip-har")
    # creating the database here would race the MLflow server `clip-har up` starts beside it
    assert not state.mlflow_db.exists()


def test_the_alias_moves_only_if_the_gated_champion_is_still_champion(tmp_path: Path) -> None:
    """Compare-and-set: a decision gated against v1 cannot promote once v2 is champion."""
    from clip_har.gate import GateDecision
    from clip_har.registry import ChampionMoved, champion_version, register
    from clip_har.tracking import client, ensure_experiment

    c = client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = ensure_experiment(c, "e", tmp_path / "artifacts")

    def promote(gated_against: str | None) -> str:
        run = c.create_run(exp).info.run_id
        decision = GateDecision(True, [], 0.9, None, 0.5, champion_version=gated_against)
        return register(c, "m", run, decision, {"data_version": "d1"}).version

    assert promote(None) == "1" and promote("1") == "2"
    with pytest.raises(ChampionMoved, match="from 1 to v2"):
        promote("1")  # gated while v1 was champion: it must be gated again against v2
    assert champion_version(c, "m") == "2" and len(c.search_model_versions("name='m'")) == 2  # nothing created
