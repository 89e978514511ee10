"""The promotion gate: a pure function from evaluation reports to a JSON-able decision."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from clip_har.config import GateConfig
from clip_har.export.verify import ExportRecord
from clip_har.metrics import EvalReport


@dataclass(frozen=True)
class Rule:
    name: str
    passed: bool
    detail: str


@dataclass
class GateDecision:
    promote: bool
    rules: list[Rule]
    candidate_macro_f1: float
    champion_macro_f1: float | None
    zero_shot_macro_f1: float
    champion_version: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def reasons(self) -> list[str]:
        return [f"{r.name}: {r.detail}" for r in self.rules if not r.passed]

    def to_dict(self) -> dict:
        return {**asdict(self), "reasons": self.reasons}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        verdict = "**PROMOTE**" if self.promote else "**REJECT**"
        lines = [f"### Gate decision: {verdict}", "", "| rule | result | detail |", "|---|---|---|"]
        lines += [f"| {r.name} | {'pass' if r.passed else 'FAIL'} | {r.detail} |" for r in self.rules]
        return "\n".join(lines)


def _beats_champion(c: EvalReport, champ: EvalReport | None, cfg: GateConfig) -> Rule:
    if champ is None:
        return Rule("beats_champion", True, "no champion yet")
    need = champ.macro_f1 + cfg.min_improvement
    ok = c.macro_f1 >= need
    return Rule(
        "beats_champion", ok, f"macro-F1 {c.macro_f1:.4f} vs champion {champ.macro_f1:.4f} + {cfg.min_improvement}"
    )


def _beats_zero_shot(c: EvalReport, zs: EvalReport, cfg: GateConfig) -> Rule:
    need = zs.macro_f1 + cfg.zero_shot_margin
    ok = c.macro_f1 >= need
    return Rule(
        "beats_zero_shot", ok, f"macro-F1 {c.macro_f1:.4f} vs zero-shot {zs.macro_f1:.4f} + {cfg.zero_shot_margin}"
    )


def _no_class_regression(c: EvalReport, champ: EvalReport | None, cfg: GateConfig) -> Rule:
    if champ is None:
        return Rule("no_class_regression", True, "no champion yet")
    drops = {k: champ.per_class[k]["f1"] - v["f1"] for k, v in c.per_class.items() if k in champ.per_class}
    worst = max(drops, key=lambda k: drops[k]) if drops else None
    if worst is None or drops[worst] <= cfg.max_class_regression:
        return Rule("no_class_regression", True, f"largest per-class F1 drop {max(drops.values(), default=0):.4f}")
    bad = sorted(k for k, d in drops.items() if d > cfg.max_class_regression)
    return Rule("no_class_regression", False, f"F1 drops > {cfg.max_class_regression} on {', '.join(bad)}")


def _export_parity(export: ExportRecord, cfg: GateConfig) -> Rule:
    p = export.parity
    ok = p.max_abs_logit_diff <= cfg.max_export_logit_diff and p.top1_agreement >= cfg.min_export_agreement
    return Rule(
        "export_parity",
        ok,
        f"max |Δlogit| {p.max_abs_logit_diff:.2e} (≤ {cfg.max_export_logit_diff:.0e}), "
        f"top-1 agreement {p.top1_agreement:.4f} (≥ {cfg.min_export_agreement}) on {p.n} images",
    )


def _latency_budget(export: ExportRecord, backend: str, cfg: GateConfig) -> Rule:
    p95 = export.p95(backend)
    if p95 is None:
        return Rule("latency_budget", False, f"no latency measured for backend {backend}")
    return Rule("latency_budget", p95 <= cfg.latency_p95_ms, f"{backend} p95 {p95:.2f} ms (≤ {cfg.latency_p95_ms} ms)")


def decide(
    candidate: EvalReport,
    zero_shot: EvalReport,
    champion: EvalReport | None,
    cfg: GateConfig,
    champion_version: str | None = None,
    export: ExportRecord | None = None,
    serve_backend: str = "onnx",
) -> GateDecision:
    """Promote iff every rule passes. Pure: no I/O, same inputs → same decision."""
    rules = [
        _beats_champion(candidate, champion, cfg),
        _beats_zero_shot(candidate, zero_shot, cfg),
        _no_class_regression(candidate, champion, cfg),
    ]
    if export is not None:
        rules += [_export_parity(export, cfg), _latency_budget(export, serve_backend, cfg)]
    return GateDecision(
        promote=all(r.passed for r in rules),
        rules=rules,
        candidate_macro_f1=candidate.macro_f1,
        champion_macro_f1=champion.macro_f1 if champion else None,
        zero_shot_macro_f1=zero_shot.macro_f1,
        champion_version=champion_version,
    )
