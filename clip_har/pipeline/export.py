"""export: ONNX export + parity/int8/fp16/latency checks (+ a TensorRT engine where possible) into
the run dir, with the drift monitor's reference window beside the graphs. The export record goes
into the model directory too: the `auto` backend reads there which variants may serve."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from clip_har.config import ExportConfig, PipelineConfig
from clip_har.pipeline.rundir import RunDir

if TYPE_CHECKING:  # prepare_data reads settings (pydantic-settings), which GPU images lack
    from clip_har.pipeline.prepare_data import DataRef


@dataclass
class ExportSummary:
    onnx_dir: str
    record: str
    image_sha256: str
    serve_backend: str  # the CPU backend the gate checked and the service uses without a GPU


def run(cfg: PipelineConfig, data: DataRef, run_dir: RunDir) -> ExportSummary:
    from clip_har.export.onnx_export import export_onnx
    from clip_har.export.verify import RECORD, verify_export
    from clip_har.monitoring.reference import REFERENCE, save_reference

    onnx_meta = export_onnx(run_dir.model, run_dir.onnx)
    x = cfg.export
    record = verify_export(
        run_dir.model, run_dir.onnx, Path(data.root), x.int8_min_agreement, x.half_min_agreement, x.fp16
    )
    # The drift monitor's reference window travels with the exported model (and its Bento).
    save_reference(run_dir.model, Path(data.root), run_dir.onnx / REFERENCE)
    size = onnx_meta.model.preprocess_config().image_size
    record.tensorrt = tensorrt_engine(x, record.fp16, run_dir, Path(data.root), size)
    record.serve_backend = serve_backend(x.serve_backend, bool(record.int8.get("shipped")))
    record.save(run_dir.onnx / RECORD)
    path = record.save(run_dir.export_record)
    return ExportSummary(str(run_dir.onnx), str(path), onnx_meta.image_sha256, record.serve_backend)


def serve_backend(wanted: str, int8_shipped: bool) -> str:
    """The concrete CPU backend the gate checks: int8 only where it shipped."""
    return "onnx-int8" if wanted in ("onnx-int8", "auto") and int8_shipped else "onnx"


def tensorrt_engine(cfg: ExportConfig, fp16: dict, run_dir: RunDir, data_root: Path, size: int) -> dict[str, object]:
    """An engine built from the fp16 graph into the model directory and checked against fp32, or
    why there is none. A failed build or check is recorded, never a failed pipeline: the engine is
    an optional accelerator, and the model serves without it."""
    from clip_har.export.tensorrt import build_engine, current_stamp, discard_engine, unavailable_reason
    from clip_har.export.verify import FP16_ONNX, check_engine

    reason = unavailable_reason() if cfg.tensorrt else "disabled by config (export.tensorrt=false)"
    if not reason and not fp16.get("shipped"):
        reason = f"needs the fp16 graph, which did not ship ({'; '.join(map(str, fp16.get('why_not', [])))})"
    if reason:
        return {"built": False, "skipped": reason}
    try:
        engine = build_engine(run_dir.onnx / FP16_ONNX, run_dir.onnx, size)
        check = check_engine(engine, run_dir.model, data_root, cfg.half_min_agreement)
    except Exception as exc:  # TensorRT raises more than RuntimeError across versions; optional either way
        discard_engine(run_dir.onnx)
        return {"built": False, "skipped": f"build or check failed: {exc}"}
    if not check["shipped"]:
        discard_engine(run_dir.onnx)
    stamp = current_stamp()
    built = bool(check["shipped"])
    where = {"engine": str(engine)} if built else {}  # no path to an engine that was discarded
    return {"built": built, **where, "stamp": asdict(stamp) if stamp else {}, **check}
