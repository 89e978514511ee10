"""The training-pipeline flow end to end on tiny data, in a real Prefect test harness with
MLflow SQLite under tmp_path: promote, gate against the champion, fail on bad data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from prefect.client.orchestration import get_client

from clip_har.registry import champion_version
from clip_har.settings import StateDir, load_settings
from clip_har.tracking import client

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAST = ["data.synth.n=150", "data.synth.size=48", "pretrain.n=150", "train.max_epochs=1"]


def _runs(state: StateDir) -> int:
    c = client(state.mlflow_uri)
    exp = c.get_experiment_by_name("clip-har")
    return 0 if exp is None else len(c.search_runs([exp.experiment_id]))


def test_pipeline_promotes_then_gates_against_champion(prefect_harness, state_dir: Path) -> None:
    from flows.training_pipeline import training_pipeline

    state = load_settings().state
    first = training_pipeline(profile="tiny", overrides=FAST)
    assert first["registration"]["promoted"] and first["registration"]["version"] == "1"
    assert first["data_version"]["tag"] == "tiny-v1"
    c = client(state.mlflow_uri)
    assert champion_version(c, "clip-har") == "1"
    run_dir = Path(first["run_dir"])
    for name in (
        "data_gate.json",
        "lineage.json",
        "gate_decision.json",
        "model/meta.json",
        "eval/confusion.png",
        "export_record.json",
        "onnx/image.onnx",
        "onnx/text.onnx",
        "onnx/reference.parquet",
    ):
        assert (run_dir / name).is_file(), name
    reference = pd.read_parquet(run_dir / "onnx/reference.parquet")
    assert len(reference) == 30 and {"label", "embedding", "brightness", "contrast"} <= set(reference.columns)
    # lineage: data version → GX result → MLflow run/version → ONNX sha256 → Bento tag
    lineage = first["lineage"]
    assert lineage["data_version"] == "tiny-v1" and Path(lineage["gx_result"]).is_file()
    assert lineage["registry_version"] == "1" and len(lineage["onnx_sha256"]) == 64
    assert lineage["bento"].startswith("clip-har:") and lineage["bento_model"].startswith("clip-har:")
    assert {r["name"] for r in first["gate"]["rules"]} >= {"export_parity", "latency_budget"}
    # the flow run's page links to the MLflow run and shows its confusion matrix
    run_id = c.get_model_version("clip-har", "1").run_id
    assert first["mlflow_run_url"].endswith(f"/runs/{run_id}")
    with get_client(sync_client=True) as pc:
        artifacts = {a.key: a for a in pc.read_artifacts() if str(a.flow_run_id) == str(first["flow_run_id"])}
    assert artifacts["mlflow-run"].data.endswith(f"({first['mlflow_run_url']})")  # a link: [text](url)
    assert f"run_uuid={run_id}" in artifacts["where-to-look"].data and "no check yet" in artifacts["where-to-look"].data
    # An impossible margin: the second run must be rejected and the champion must stay.
    second = training_pipeline(profile="tiny", overrides=[*FAST, "gate.min_improvement=2.0"], reason="test")
    assert not second["registration"]["promoted"] and second["registration"]["version"] == "2"
    assert second["data_version"]["tag"] == "tiny-v1"  # same data, same version
    assert champion_version(c, "clip-har") == "1"
    # the champion sat the challenger's exam: re-scored on the same test split, same data → same score
    assert second["eval"]["champion"] and second["gate"]["champion_macro_f1"] == pytest.approx(
        first["macro_f1"], abs=1e-9
    )
    mv = c.get_model_version("clip-har", "2")
    assert mv.tags["status"] == "rejected" and "beats_champion" in mv.tags["rejected_because"]
    assert mv.tags["lineage.data_version"] == "tiny-v1"
    assert second["lineage"] == {}  # rejected models are not packaged


def _batch_inputs(tiny_data: Path, folder: Path) -> Path:
    folder.mkdir()
    for p in sorted((tiny_data / "images").rglob("*.jpg"))[:5]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    return folder


def test_batch_inference_lists_unreadable_files(
    prefect_harness, state_dir: Path, tmp_path: Path, tiny_data: Path
) -> None:
    from flows.batch_inference import batch_inference
    from flows.training_pipeline import training_pipeline

    with pytest.raises(LookupError, match="no champion"):
        batch_inference(inputs=[str(tiny_data)], output=str(tmp_path / "none.csv"))
    training_pipeline(profile="tiny", overrides=[*FAST, "export.package=false"])
    folder = _batch_inputs(tiny_data, tmp_path / "in")
    result = batch_inference(inputs=[str(folder)], output=str(tmp_path / "out.json"), batch_size=2)
    assert result["rows"] == 6 and result["errors"] == 1 and result["model_version"] == "1"
    rows = pd.read_json(tmp_path / "out.json")
    bad = rows[rows["path"].str.endswith("broken.jpg")].iloc[0]
    assert "cannot decode" in bad["error"]
    assert rows["label"].notna().sum() == 5


def test_bad_data_fails_before_training(prefect_harness, state_dir: Path, tmp_path: Path, tiny_data: Path) -> None:
    from flows.training_pipeline import training_pipeline

    df = pd.read_csv(tiny_data / "manifest.csv")
    # an image folder with one corrupt file and one unknown label
    src = tmp_path / "photos"
    for path, label in zip(df["path"], df["label"], strict=True):
        (src / label).mkdir(parents=True, exist_ok=True)
        (src / label / Path(path).name).write_bytes((tiny_data / path).read_bytes())
    broken = next((src / "running").iterdir())
    broken.write_bytes(b"\x89PNG broken")
    (src / "juggling").mkdir()
    (src / "juggling" / "x.jpg").write_bytes((tiny_data / df["path"][0]).read_bytes()[:-10] + b"0123456789")
    state = load_settings().state
    overrides = [*FAST, "data.source=folder", f"data.path={src}", "data.name=photos"]
    with pytest.raises(Exception, match="data gate FAILED") as err:
        training_pipeline(profile="tiny", overrides=overrides)
    assert broken.name in str(err.value) and "juggling" in str(err.value)
    assert _runs(state) == 0  # nothing trained, nothing registered
    assert not (state.cache / "base").exists()


def test_missing_data_dir_fails_the_flow(prefect_harness, state_dir: Path, tmp_path: Path) -> None:
    from flows.training_pipeline import training_pipeline

    overrides = [*FAST, "data.source=folder", f"data.path={tmp_path / 'nowhere'}", "data.name=photos"]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        training_pipeline(profile="tiny", overrides=overrides)
    assert _runs(load_settings().state) == 0


def test_drift_monitor_flow(prefect_harness, state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from clip_har.monitoring.predlog import PredictionLog, PredictionRecord
    from flows.drift_monitor import drift_monitor
    from flows.training_pipeline import training_pipeline

    # the service writes its log where CLIP_HAR_PREDICTION_LOG says; the monitor must read it there
    log_dir = tmp_path / "elsewhere" / "predictions"
    monkeypatch.setenv("CLIP_HAR_PREDICTION_LOG", str(log_dir))
    training_pipeline(profile="tiny", overrides=[*FAST, "export.package=false"])
    state = load_settings().state
    assert state.predictions == log_dir
    rng = np.random.default_rng(0)

    def log_rows(n: int, shift: float) -> None:
        log = PredictionLog(log_dir)
        for i in range(n):
            e = rng.standard_normal(64) + shift
            log.append(PredictionRecord(f"r{i}", "v1", "running", 0.5, list(e / np.linalg.norm(e)), 20.0, 5.0, 64, 64))
        log.close()

    log_rows(50, 0.0)
    first = drift_monitor()
    assert first["status"] == "insufficient_data" and first["event_id"] is None
    log_rows(300, 3.0)  # with the 50 above: the cursor did not move, so 350 are checked now
    (log_dir / "2026-01-01" / "00").mkdir(parents=True)
    (log_dir / "2026-01-01" / "00" / "part-1-x.parquet").write_bytes(b"corrupt")
    second = drift_monitor()
    assert second["status"] == "drift" and second["n_current"] == 350 and second["event_id"]
    assert second["drifted"]["brightness"] and Path(second["report_html"]).is_file()
    third = drift_monitor()  # nothing new since the last verdict
    assert third["status"] == "insufficient_data" and third["n_current"] == 0


def test_data_ingest_versions_good_batches_and_rejects_bad_ones(
    prefect_harness, state_dir: Path, tmp_path: Path
) -> None:
    from clip_har.data.versioning import list_versions
    from clip_har.synth.generate import SynthSpec, synthesize
    from flows.data_ingest import data_ingest
    from flows.training_pipeline import training_pipeline

    with pytest.raises(FileNotFoundError, match="run the training pipeline first"):
        data_ingest(folder=str(tmp_path), profile="tiny", overrides=FAST)
    training_pipeline(profile="tiny", overrides=[*FAST, "export.enabled=false"])
    state = load_settings().state
    new = synthesize(tmp_path / "new", SynthSpec(n=15, seed=77, size=48, style="night"))
    labelled = tmp_path / "labelled"
    for path, label in pd.read_csv(new / "manifest.csv")[["path", "label"]].itertuples(index=False):
        (labelled / label).mkdir(parents=True, exist_ok=True)
        (labelled / label / Path(path).name).write_bytes((new / path).read_bytes())
    result = data_ingest(folder=str(labelled), profile="tiny", overrides=FAST)
    assert result["added"] == 15 and result["data_version"]["tag"] == "tiny-v2" and result["event_id"]
    manifest = pd.read_csv(state.data_registry / "datasets" / "tiny" / "manifest.csv")
    assert len(manifest) == 165 and manifest["source"].str.startswith("ingest:").sum() == 15
    bad = tmp_path / "bad"
    (bad / "running").mkdir(parents=True)
    (bad / "running" / "broken.jpg").write_bytes(b"\xff\xd8 nope")
    with pytest.raises(Exception, match="data gate FAILED"):
        data_ingest(folder=str(bad), profile="tiny", overrides=FAST)
    assert len(pd.read_csv(state.data_registry / "datasets" / "tiny" / "manifest.csv")) == 165  # untouched
    assert list_versions(state.data_registry, "tiny") == ["tiny-v1", "tiny-v2"]


def test_event_triggered_training_is_deduplicated(prefect_harness, state_dir: Path) -> None:
    from flows.training_pipeline import training_pipeline

    # min_interval_s=0: this module's other tests ran training flows in the same harness
    first = training_pipeline(
        profile="tiny", overrides=[*FAST, "export.enabled=false"], reason="drift alert: x", min_interval_s=0
    )
    assert first["registration"]["version"] == "1"
    state = training_pipeline(
        profile="tiny", overrides=FAST, reason="drift alert: y", min_interval_s=3600, return_state=True
    )
    assert state.is_cancelled() and "de-duplicated" in state.message
    manual = training_pipeline(profile="tiny", overrides=[*FAST, "export.enabled=false"], reason="manual")
    assert manual["registration"]["version"] == "2"  # people are never de-duplicated


def test_a_run_whose_champion_moved_is_gated_again(
    prefect_harness, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two pipelines at once: this run's gate compared against a champion that another run has
    since replaced. Registration gates it again against the champion of now."""
    import json

    from clip_har.pipeline import gate
    from flows.training_pipeline import training_pipeline

    # no packaging: BentoML fixes its store at the first import (see conftest), and this test is
    # about the registry
    fast = [*FAST, "export.package=false"]
    first = training_pipeline(profile="tiny", overrides=fast)
    assert first["registration"]["champion_version"] == "1"
    real, calls = gate.run, []

    def stale_first(*args: object, **kwargs: object):  # a GateDecision
        decision = real(*args, **kwargs)
        calls.append(decision.champion_version)
        if len(calls) == 1:  # as if gated before v1 was promoted by the other run
            decision.champion_version, decision.promote = None, True
        return decision

    monkeypatch.setattr(gate, "run", stale_first)
    second = training_pipeline(profile="tiny", overrides=[*fast, "gate.min_improvement=-1.0"])
    assert calls == ["1", "1"]  # gated, then gated again when registering
    assert second["gate"]["champion_version"] == "1"
    saved = json.loads((Path(second["run_dir"]) / "gate_decision.json").read_text())
    assert saved["champion_version"] == "1" and saved["promote"] == second["registration"]["promoted"]
