"""The training pipeline's result: what `clip-har pipeline run` prints and the flow returns."""

from __future__ import annotations

from dataclasses import asdict

from clip_har.data.versioning import DataVersion
from clip_har.gate import GateDecision
from clip_har.pipeline.evaluate import EvalSummary
from clip_har.registry import Registration


def summary(reg: Registration, ev: EvalSummary, decision: GateDecision, data_version: DataVersion) -> dict:
    return {
        "registration": reg.to_dict(),
        "accuracy": ev.accuracy,
        "macro_f1": ev.macro_f1,
        "gate": decision.to_dict(),
        "data_version": data_version.to_dict(),
        "eval": asdict(ev) | {"markdown": None},
    }
