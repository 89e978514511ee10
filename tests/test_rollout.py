"""Shadow rollout: the decision table, the promote / abort / rollback moves on a real MLflow
registry (SQLite in tmp_path), the challenger's accuracy on labelled review images with a real
exported model, the CLI's exit codes, the pipeline's shadow path (slow). The flows against the
real service: test_rollout_service.py."""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clip_har import rollout as ro
from clip_har.config import RolloutConfig
from clip_har.gate import GateDecision
from clip_har.monitoring.drift import DriftResult
from clip_har.monitoring.monitor import CURSOR
from clip_har.monitoring.review import ReviewQueue
from clip_har.registry import CHAMPION, ChampionMoved, champion_version, register
from clip_har.rollout_registry import challenger_version
from clip_har.settings import StateDir, load_settings
from clip_har.tracking import client, ensure_experiment
from clip_har_cli.main import app

NAME = "clip-har"
ROOT = Path(__file__).resolve().parents[1]
RULES = RolloutConfig(shadow_requests=10, min_agreement=0.8, min_reviewed_accuracy=0.8, min_reviewed=5)


@pytest.mark.parametrize(
    ("requests", "errors", "agreement", "reviewed", "action", "needle"),
    [
        (9, 0, 0.1, None, "wait", "9 of 10 shadow requests"),
        (10, 0, 0.9, None, "promote", "reviewed accuracy not judged: 0 labelled"),
        (10, 0, 0.9, ro.ReviewedScore(4, 0.0, 0.5), "promote", "not judged: 4 labelled review image(s), 5 needed"),
        (10, 0, 0.9, ro.ReviewedScore(5, 0.8, 0.5), "promote", "reviewed accuracy 0.800 on 5 images"),
        (10, 0, 0.79, None, "abort", "agreement 0.790 (min 0.8)"),
        (10, 0, None, None, "abort", "no image was scored by both models"),
        (10, 0, 0.9, ro.ReviewedScore(50, 0.6, 0.9), "abort", "reviewed accuracy 0.600 on 50 images (min 0.8)"),
        (8, 2, 0.9, None, "abort", "challenger errors 2 of 10 requests"),  # failed requests count towards N
        (0, 10, None, None, "abort", "challenger errors 10 of 10"),  # a challenger that always fails is judged
    ],
)
def test_decide(requests, errors, agreement, reviewed, action, needle) -> None:
    stats = {"requests": requests, "errors": errors, "agreement": agreement, "skipped": 3}
    decision = ro.decide(stats, reviewed, RULES)
    assert decision.action == action and any(needle in r for r in decision.reasons), decision


def test_abort_lists_every_failed_rule_and_promote_every_passed_one() -> None:
    bad = ro.decide({"requests": 10, "errors": 1, "agreement": 0.5}, ro.ReviewedScore(9, 0.1, 0.9), RULES)
    assert bad.action == "abort" and len(bad.reasons) == 3
    good = ro.decide({"requests": 12, "errors": 0, "agreement": 0.95}, ro.ReviewedScore(9, 0.9, 0.7), RULES)
    assert good.action == "promote" and len(good.reasons) == 3


def test_the_rollout_config() -> None:
    from clip_har.config import ConfigError, load_config

    assert load_config("demo").rollout.shadow_requests == load_config("tiny").rollout.shadow_requests == 0
    assert load_config("har-vitb32").rollout.shadow_requests == 500
    with pytest.raises(ConfigError, match=r"rollout\.shadow_request: Extra inputs"):
        load_config("tiny", ["rollout.shadow_request=5"])
    with pytest.raises(ConfigError, match=r"^invalid config \(tiny\): rollout.shadow_requests > 0 needs export"):
        load_config("tiny", ["rollout.shadow_requests=5", "export.package=false"])


# --- the registry moves ---------------------------------------------------------------------


@pytest.fixture
def state(state_dir: Path) -> StateDir:
    return load_settings().state


def _add(state: StateDir, gated_against: str | None, shadow: bool, bento: str) -> str:
    """A registered version (no artifacts: the moves only touch aliases and tags)."""
    c = client(state.mlflow_uri)
    run = c.create_run(ensure_experiment(c, "clip-har", state.mlflow_artifacts)).info.run_id
    decision = GateDecision(True, [], 0.9, None, 0.5, champion_version=gated_against)
    lineage = {"bento_model": bento, "serve_backend": "onnx"}
    return register(c, NAME, run, decision, lineage, shadow=shadow).version


def _in_shadow(state: StateDir, rules: RolloutConfig = RULES) -> ro.Rollout:
    """v1 champion, v2 its challenger in shadow."""
    assert _add(state, None, False, "clip-har:one") == "1"
    assert _add(state, "1", True, "clip-har:two") == "2"
    return ro.begin(state, NAME, "2", "1", rules)


def _aliases(state: StateDir) -> tuple[str | None, str | None]:
    c = client(state.mlflow_uri)
    return champion_version(c, NAME), challenger_version(c, NAME)


def _tags(state: StateDir, version: str) -> dict[str, str]:
    return dict(client(state.mlflow_uri).get_model_version(NAME, version).tags)


def test_a_shadow_registration_leaves_the_champion_and_the_rollout_records_both(state: StateDir) -> None:
    rollout = _in_shadow(state)
    assert _aliases(state) == ("1", "2") and _tags(state, "2")["status"] == "shadow"
    assert (rollout.challenger_bento, rollout.champion_bento, rollout.status) == (
        "clip-har:two",
        "clip-har:one",
        "shadow",
    )
    assert ro.load_rollout(state.rollout) == rollout and ro.in_shadow(state) == rollout
    assert rollout.rules == RULES  # the training run's thresholds travel with the rollout
    with pytest.raises(ro.RolloutError, match="not the challenger in shadow"):
        ro.in_shadow(state, "clip-har:other")  # a stale challenger event


def test_a_replaced_challenger_starts_no_rollout(state: StateDir) -> None:
    """Two runs packaging at once: the older one's rollout must not overwrite the newer one's."""
    newer = _in_shadow(state)
    assert _add(state, "1", True, "clip-har:three") == "3"  # v3 replaces v2 as the challenger
    with pytest.raises(ro.RolloutError, match="v2 is no longer the challenger"):
        ro.begin(state, NAME, "2", "1", RULES)
    assert ro.load_rollout(state.rollout) == newer  # untouched: v3's own begin writes it


def test_promote_moves_the_alias_with_compare_and_set(state: StateDir) -> None:
    rollout = _in_shadow(state)
    promoted = ro.promote(state, rollout, "agreement 0.95")
    assert _aliases(state) == ("2", None)
    assert _tags(state, "2")["status"] == CHAMPION and _tags(state, "1")["status"] == "superseded"
    assert promoted.status == "promoted" and promoted.promoted_at and ro.load_rollout(state.rollout) == promoted
    # the drift monitor's next window starts at the promotion: the new champion's predictions only
    assert json.loads((state.reports / CURSOR).read_text())["since"] == pytest.approx(promoted.promoted_at)
    with pytest.raises(ro.RolloutError, match="changed meanwhile"):
        ro.promote(state, rollout, "again")  # a second decider (a person beside the schedule) loses


def test_promote_refuses_when_the_champion_moved_and_changes_nothing(state: StateDir) -> None:
    rollout = _in_shadow(state)
    assert _add(state, "1", False, "clip-har:three") == "3"  # promoted directly meanwhile
    with pytest.raises(ChampionMoved, match="from 1 to v3"):
        ro.promote(state, rollout, "ok")
    assert _aliases(state) == ("3", "2") and ro.load_rollout(state.rollout) == rollout


def test_abort_removes_the_alias_keeps_the_champion_and_records_the_reason(state: StateDir) -> None:
    rollout = _in_shadow(state)
    aborted = ro.abort(state, rollout, "agreement 0.420 (min 0.8)")
    assert _aliases(state) == ("1", None)
    assert (
        _tags(state, "2")["status"] == "aborted" and _tags(state, "2")["aborted_because"] == "agreement 0.420 (min 0.8)"
    )
    assert (aborted.status, aborted.reason) == ("aborted", "agreement 0.420 (min 0.8)")
    with pytest.raises(ro.RolloutError, match=r"no rollout in progress: the last one \(v2\) was aborted"):
        ro.in_shadow(state)


def _drift(prediction: bool) -> DriftResult:
    return DriftResult(
        "drift",
        400,
        300,
        scores={"prediction": 0.41 if prediction else 0.02, "embedding": 0.9},
        drifted={"prediction": prediction, "embedding": True},
        thresholds={"prediction": 0.15, "embedding": 0.55},
    )


def test_prediction_drift_within_the_window_rolls_the_promotion_back(state: StateDir) -> None:
    ro.promote(state, _in_shadow(state), "ok")
    assert ro.roll_back_if_drifted(state, NAME, _drift(prediction=False), "2") is None  # input drift alone
    assert ro.roll_back_if_drifted(state, NAME, _drift(prediction=True), "1") is None  # judged another champion
    assert ro.roll_back_if_drifted(state, "other-model", _drift(prediction=True), "2") is None
    assert _aliases(state) == ("2", None)
    back = ro.roll_back_if_drifted(state, NAME, _drift(prediction=True), "2")
    assert back is not None and back.status == "rolled_back" and "prediction drift 0.410 > 0.150" in back.reason
    assert _aliases(state) == ("1", None)
    assert (
        _tags(state, "2")["status"] == "rolled_back" and "prediction drift" in _tags(state, "2")["rolled_back_because"]
    )
    assert _tags(state, "1")["status"] == CHAMPION and back.champion_bento == "clip-har:one"
    assert ro.roll_back_if_drifted(state, NAME, _drift(prediction=True), "1") is None  # once


def test_no_rollback_outside_the_window(state: StateDir) -> None:
    promoted = ro.promote(state, _in_shadow(state), "ok")
    ro.save_rollout(state.rollout, replace(promoted, promoted_at=time.time() - RULES.rollback_window_s - 60))
    assert ro.roll_back_if_drifted(state, NAME, _drift(prediction=True), "2") is None
    assert _aliases(state) == ("2", None)
    now = promoted.promoted_at + 10
    assert ro.should_roll_back(promoted, _drift(True), now, RULES, "2")
    assert ro.should_roll_back(promoted, _drift(True), now + RULES.rollback_window_s, RULES, "2") is None


def test_judge_waits_when_the_service_shadows_another_model_and_force_promotes(state: StateDir) -> None:
    rollout = _in_shadow(state)
    stats = {"challenger": "clip-har:other", "requests": 99, "agreement": 0.1}
    waiting = ro.judge(rollout, stats, None)
    assert waiting.action == "wait" and "shadows clip-har:other, not the rollout's clip-har:two" in waiting.reasons[0]
    forced = ro.judge(rollout, {**stats, "challenger": "clip-har:two"}, None, force=True)
    assert forced.action == "promote" and forced.reasons[0] == "forced by hand; the rules said abort"
    markdown = ro.decision_markdown(rollout, stats, ro.ReviewedScore(3, 0.5, 1.0), forced)
    assert "**PROMOTE**" in markdown and "| top-1 agreement | 0.100 | ≥ 0.8 |" in markdown


# --- the challenger on the review queue's labelled images -----------------------------------


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_reviewed_accuracy_scores_the_labelled_items_not_yet_exported(tmp_path: Path) -> None:
    from clip_har.export.onnx_export import export_untrained
    from clip_har.serving.predictor import Predictor

    predictor = Predictor(export_untrained(tmp_path / "onnx", seed=0))
    classes = predictor.classes
    images = [_png(i) for i in range(5)]
    said = [p.label for p in predictor.predict(np.stack([predictor.decode(b) for b in images]), top_k=1)]
    wrong = next(c for c in classes if c != said[2])
    queue = ReviewQueue(tmp_path / "review")
    uniform = np.full(len(classes), 1 / len(classes))  # uncertain: kept; the champion "predicted" classes[0]
    labels = [said[0], said[1], wrong, said[3], said[4]]
    ids = [queue.offer(image, uniform, classes, "1", ".png") for image in images]
    ids.append(queue.offer(b"\x89PNG not an image", uniform, classes, "1", ".png"))
    for item_id, label in zip(ids, [*labels, classes[0]], strict=True):
        queue.label(item_id, label, classes)
    queue.export(tmp_path / "exported")  # every labelled item so far went to ingestion ...
    assert ro.reviewed_accuracy(tmp_path / "review", predictor).n == 0  # ... and may be in its training data
    for item in queue.items("labelled")[:4] + queue.items("labelled")[5:]:  # as if labelled after the export
        path = tmp_path / "review" / "labelled" / f"{item.id}.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "exported": False}))
    score = ro.reviewed_accuracy(tmp_path / "review", predictor)
    champion_right = sum(label == classes[0] for label in labels[:4])
    assert score == ro.ReviewedScore(4, 3 / 4, champion_right / 4, unreadable=1)


# --- the command line -----------------------------------------------------------------------


@pytest.fixture
def cli_env(state: StateDir, monkeypatch: pytest.MonkeyPatch) -> StateDir:
    """The CLI exports the state dir's environment (MLflow URIs, homes); restored after the test."""
    for key, value in state.env().items():
        monkeypatch.setenv(key, os.environ.get(key, value))
    return state


def test_cli_without_a_rollout(cli_env: StateDir, free_port, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    monkeypatch.setenv("CLIP_HAR_SERVICE_URL", f"http://127.0.0.1:{free_port()}")
    r = runner.invoke(app, ["rollout", "status"])
    assert r.exit_code == 0 and "rollout: none yet" in r.output and "not reachable" in r.output, r.output
    for args in (["rollout", "promote"], ["rollout", "promote", "--force"], ["rollout", "abort"]):
        r = runner.invoke(app, args)
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert r.exit_code == 1 and len(lines) == 1, (args, r.output)
        assert lines[0].startswith("error: no rollout yet: a gated model shadows the champion"), r.output
    assert runner.invoke(app, ["rollout", "abort", "--reason", " "]).exit_code == 2


def test_cli_status_of_a_rollout_with_the_service_down(
    cli_env: StateDir, free_port, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIP_HAR_SERVICE_URL", f"http://127.0.0.1:{free_port()}")
    _in_shadow(cli_env)
    r = CliRunner().invoke(app, ["rollout", "status"])
    assert r.exit_code == 0, r.output
    assert "v2 (clip-har:two) beside champion v1 (clip-har:one): shadow" in r.output
    assert "registry: champion v1, challenger v2" in r.output and "not reachable" in r.output
    r = CliRunner().invoke(app, ["rollout", "status", "--json"])
    out = json.loads(r.output)
    assert out["rollout"]["status"] == "shadow" and "not reachable" in out["shadow"]["error"]


def test_a_decision_without_the_service_fails_and_changes_nothing(
    prefect_harness, cli_env: StateDir, free_port, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.rollout import rollout_decide

    rollout = _in_shadow(cli_env)
    down = f"http://127.0.0.1:{free_port()}"
    result = rollout_decide(url=down, return_state=True)
    assert result.is_failed() and "not reachable" in result.message
    assert _aliases(cli_env) == ("1", "2") and ro.load_rollout(cli_env.rollout) == rollout
    # by hand: one line, exit 1; `abort` goes on without the service and says it still shadows
    monkeypatch.setenv("CLIP_HAR_SERVICE_URL", down)
    r = CliRunner().invoke(app, ["rollout", "promote", "--force"])
    assert r.exit_code == 1 and r.output.strip().splitlines()[-1].startswith("error: no decision: "), r.output
    r = CliRunner().invoke(app, ["rollout", "abort", "--reason", "wrong data"])
    assert r.exit_code == 0 and "aborted: v2 (wrong data); champion v1 stays" in r.output, r.output
    assert "the service still shadows it" in r.output
    assert _aliases(cli_env) == ("1", None) and _tags(cli_env, "2")["aborted_because"] == "wrong data"
    assert CliRunner().invoke(app, ["rollout", "abort"]).exit_code == 1  # nothing in progress any more


# --- the training pipeline's shadow path ----------------------------------------------------


def test_the_register_stage_shadows_and_a_newer_model_replaces_the_challenger(state: StateDir) -> None:
    from clip_har.config import load_config
    from clip_har.data.versioning import DataVersion
    from clip_har.pipeline import register as stage
    from clip_har.pipeline.rundir import RunDir
    from clip_har.train.trainer import TrainResult

    assert _add(state, None, False, "clip-har:one") == "1"
    c = client(state.mlflow_uri)
    exp = ensure_experiment(c, "clip-har", state.mlflow_artifacts)

    def registered(shadow_requests: int) -> str:  # the stage after a passed gate against v1
        run_dir = RunDir.new(state.runs)
        run_dir.model.mkdir()
        (run_dir.model / "meta.json").write_text("{}")
        trained = TrainResult(c.create_run(exp).info.run_id, str(run_dir.model), "", "", 0.9, 1)
        cfg = load_config("tiny", [f"rollout.shadow_requests={shadow_requests}"])
        decision = GateDecision(True, [], 0.9, 0.8, 0.5, champion_version="1")
        version = DataVersion("tiny", "tiny-v1", "md5", "commit", "registry")
        reg, _ = stage.run(cfg, state, NAME, trained, decision, version, "gx.json", run_dir, ev=None, data=None)
        if reg.status == "shadow":
            ro.begin(state, NAME, reg.version, "1", cfg.rollout)
        return reg.status

    assert registered(5) == "shadow" and _aliases(state) == ("1", "2")
    assert registered(5) == "shadow" and _aliases(state) == ("1", "3")  # a newer challenger
    assert _tags(state, "2")["aborted_because"] == "replaced by v3, a newer challenger"
    assert registered(0) == CHAMPION and _aliases(state) == ("4", None)  # promoted at once (shadow_requests=0)
    assert _tags(state, "3")["aborted_because"] == "replaced by v4, promoted"
    last = ro.load_rollout(state.rollout)
    assert last is not None and (last.challenger_version, last.status, last.reason) == (
        "3",
        "aborted",
        "replaced by v4, promoted",
    )


FAST = ["data.synth.n=150", "data.synth.size=48", "pretrain.n=150", "train.max_epochs=1"]


@pytest.mark.slow
@pytest.mark.integration
def test_a_gated_model_shadows_instead_of_taking_over(prefect_harness, state: StateDir) -> None:
    from flows.training_pipeline import training_pipeline

    first = training_pipeline(profile="tiny", overrides=[*FAST, "rollout.shadow_requests=5"])
    assert first["registration"]["status"] == CHAMPION  # no champion to shadow: promoted at once
    shadow = [*FAST, "rollout.shadow_requests=5", "gate.min_improvement=-1.0"]
    second = training_pipeline(profile="tiny", overrides=shadow)
    reg = second["registration"]
    assert (reg["status"], reg["promoted"], reg["champion_version"]) == ("shadow", False, "1")
    assert _aliases(state) == ("1", "2")
    rollout = ro.in_shadow(state)
    assert rollout.challenger_bento == second["lineage"]["bento_model"]
    assert rollout.champion_bento == first["lineage"]["bento_model"] and rollout.rules.shadow_requests == 5
