from clip_har.config import GateConfig
from clip_har.gate import decide
from clip_har.metrics import EvalReport


def report(macro: float, per_class: dict[str, float]) -> EvalReport:
    return EvalReport("test", 100, macro, macro, 0.0, {k: {"f1": v} for k, v in per_class.items()}, [])


CFG = GateConfig(min_improvement=0.01, zero_shot_margin=0.0, max_class_regression=0.05)


def test_no_champion_promotes_if_above_zero_shot() -> None:
    d = decide(report(0.8, {"a": 0.8}), report(0.5, {"a": 0.5}), None, CFG)
    assert d.promote and d.reasons == []


def test_below_zero_shot_is_rejected() -> None:
    d = decide(report(0.4, {"a": 0.4}), report(0.5, {"a": 0.5}), None, CFG)
    assert not d.promote and d.reasons[0].startswith("beats_zero_shot")


def test_must_beat_champion_by_margin() -> None:
    champ = report(0.80, {"a": 0.8})
    assert not decide(report(0.805, {"a": 0.805}), report(0.5, {"a": 0.5}), champ, CFG).promote
    assert decide(report(0.82, {"a": 0.82}), report(0.5, {"a": 0.5}), champ, CFG).promote


def test_per_class_regression_blocks_promotion() -> None:
    champ = report(0.80, {"a": 0.9, "b": 0.7})
    cand = report(0.85, {"a": 0.8, "b": 0.9})
    d = decide(cand, report(0.5, {"a": 0.5, "b": 0.5}), champ, CFG, champion_version="3")
    assert not d.promote
    assert any("no_class_regression" in r and "a" in r for r in d.reasons)
    assert d.to_dict()["champion_version"] == "3" and '"promote": false' in d.to_json()


def test_export_parity_and_latency_rules() -> None:
    from clip_har.export.verify import ExportRecord, Latency, Parity

    good = ExportRecord(Parity(64, 1e-6, 1.0), [Latency("onnx", 1, 1.0, 2.0)])
    cand, zs = report(0.8, {"a": 0.8}), report(0.5, {"a": 0.5})
    assert decide(cand, zs, None, CFG, export=good).promote
    drift = ExportRecord(Parity(64, 0.5, 0.9), [Latency("onnx", 1, 1.0, 2.0)])
    d = decide(cand, zs, None, CFG, export=drift)
    assert not d.promote and d.reasons[0].startswith("export_parity")
    slow = ExportRecord(Parity(64, 1e-6, 1.0), [Latency("onnx", 1, 90.0, 500.0)])
    d = decide(cand, zs, None, CFG, export=slow)
    assert not d.promote and d.reasons[0].startswith("latency_budget")
    d = decide(cand, zs, None, CFG, export=good, serve_backend="onnx-int8")
    assert not d.promote and "no latency measured" in d.reasons[0]
