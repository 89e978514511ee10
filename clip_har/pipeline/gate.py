"""gate: the challenger against zero-shot and the champion (on the same test split), export parity
and the latency budget. The rules themselves are the pure `clip_har.gate.decide`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from clip_har.config import PipelineConfig
from clip_har.export.verify import ExportRecord
from clip_har.gate import GateDecision, decide
from clip_har.metrics import EvalReport
from clip_har.pipeline.evaluate import EvalSummary, champion_on_split
from clip_har.pipeline.export import ExportSummary
from clip_har.pipeline.prepare_data import DataRef
from clip_har.pipeline.rundir import RunDir
from clip_har.registry import champion_report
from clip_har.settings import StateDir
from clip_har.tracking import client


def run(
    cfg: PipelineConfig, state: StateDir, model_name: str, ev: EvalSummary, export: ExportSummary | None = None
) -> GateDecision:
    version, champion = champion_report(client(state.mlflow_uri), model_name)
    if ev.champion:  # same exam as the challenger
        champion = EvalReport.load(Path(ev.champion))
    record = ExportRecord.load(Path(export.record)) if export else None
    return decide(
        EvalReport.load(Path(ev.report)),
        EvalReport.load(Path(ev.zero_shot)),
        champion,
        cfg.gate,
        version,
        record,
        export.serve_backend if export else "onnx",
    )


def regate(
    cfg: PipelineConfig,
    state: StateDir,
    model_name: str,
    ev: EvalSummary,
    data: DataRef,
    run_dir: RunDir,
    export: ExportSummary | None = None,
) -> GateDecision:
    """The gate again, against the champion as it is now (another run promoted one since this
    run's gate): that champion re-scored on this run's test split, then the same rules."""
    classes = list(EvalReport.load(Path(ev.report)).per_class)
    champion = champion_on_split(state, model_name, Path(data.root), classes)
    ev = replace(ev, champion=str(champion.save(run_dir.eval / "champion.json")) if champion else None)
    return run(cfg, state, model_name, ev, export)
