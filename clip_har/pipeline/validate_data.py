"""validate-data: the data gate (Great Expectations) over the prepared dataset."""

from __future__ import annotations

from pathlib import Path

from clip_har.config import PipelineConfig
from clip_har.data.validate import ValidationReport, require_valid, validate_data
from clip_har.pipeline.prepare_data import DataRef


def run(cfg: PipelineConfig, data: DataRef, out: Path) -> ValidationReport:
    """Save the gate's JSON result to `out`; raises DataValidationError on failure."""
    report = validate_data(Path(data.root), cfg.data)
    out.parent.mkdir(parents=True, exist_ok=True)
    report.save(out)
    return require_valid(report)
