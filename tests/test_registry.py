"""Champion lookups that run before anything was trained (e.g. `clip-har up`, `clip-har serve`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clip_har.registry import champion_bento
from clip_har.settings import StateDir


def test_champion_lookup_without_a_registry_says_why_and_creates_nothing(state_dir: Path) -> None:
    state = StateDir.from_env()
    with pytest.raises(LookupError, match="no champion yet"):
        champion_bento(state, "clip-har")
    # creating the database here would race the MLflow server `clip-har up` starts beside it
    assert not state.mlflow_db.exists()
