"""prefect.yaml declares deployments whose entrypoints and parameters match real flows."""

import importlib
import inspect
from pathlib import Path

import yaml

from clip_har.settings import CHALLENGER_EVENT, DATA_EVENT, DRIFT_EVENT, PROMOTED_EVENT

ROOT = Path(__file__).resolve().parents[1]


def test_deployments_point_at_flows_with_valid_parameters() -> None:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = {d["name"] for d in spec["deployments"]}
    assert {"training-pipeline", "drift-monitor", "data-ingest", "batch-inference", "service-reload"} <= names
    assert {"rollout-start", "rollout-decide", "rollout-abort"} <= names
    for dep in spec["deployments"]:
        path, func = dep["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, func)
        assert flow.name == dep["name"]
        params = inspect.signature(flow.fn).parameters
        assert set(dep.get("parameters", {})) <= set(params), dep["name"]
        for trigger in dep.get("triggers", []):
            assert set(trigger.get("parameters", {})) <= set(params), dep["name"]


def test_events_reach_their_deployments() -> None:
    """Drift and new data retrain; a promotion switches the running service; a challenger
    starts shadowing in it."""
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    expects = {d["name"]: {e for t in d.get("triggers", []) for e in t["expect"]} for d in spec["deployments"]}
    assert expects["training-pipeline"] == {DRIFT_EVENT, DATA_EVENT}
    assert expects["service-reload"] == {PROMOTED_EVENT}
    assert expects["rollout-start"] == {CHALLENGER_EVENT}
