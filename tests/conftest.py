"""Shared fixtures: a tiny synthetic dataset, an isolated state dir, one Prefect harness."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from clip_har.state import TELEMETRY_OFF
from clip_har.synth.generate import SynthSpec, synthesize

for _k, _v in TELEMETRY_OFF.items():
    os.environ.setdefault(_k, _v)

TINY_SPEC = SynthSpec(n=150, seed=0, size=48)


@pytest.fixture(scope="session")
def tiny_data_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize(tmp_path_factory.mktemp("tiny") / "data", TINY_SPEC)


@pytest.fixture
def tiny_data(tiny_data_master: Path, tmp_path: Path) -> Path:
    """A private copy each test may break."""
    return Path(shutil.copytree(tiny_data_master, tmp_path / "data"))


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "state"
    monkeypatch.setenv("CLIP_HAR_HOME", str(root))
    # BentoML reads its home once, at import: the first test that packages fixes it.
    monkeypatch.setenv("BENTOML_HOME", str(root / "bentoml"))
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(key, raising=False)
    return root


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory):
    """One Prefect test server for the whole session (~10 s to start)."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
