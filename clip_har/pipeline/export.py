"""export: ONNX export + parity/int8/latency checks (+ a TensorRT engine where possible) into the
run dir, with the drift monitor's reference window beside the graphs."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from clip_har.config import PipelineConfig
from clip_har.pipeline.prepare_data import DataRef
from clip_har.pipeline.rundir import RunDir


@dataclass
class ExportSummary:
    onnx_dir: str
    record: str
    image_sha256: str
    serve_backend: str  # the backend the gate checked and the service will use


def run(cfg: PipelineConfig, data: DataRef, run_dir: RunDir) -> ExportSummary:
    from clip_har.export.onnx_export import IMAGE_ONNX, export_onnx
    from clip_har.export.tensorrt import unavailable_reason
    from clip_har.export.verify import verify_export
    from clip_har.monitoring.reference import REFERENCE, save_reference

    onnx_meta = export_onnx(run_dir.model, run_dir.onnx)
    record = verify_export(run_dir.model, run_dir.onnx, Path(data.root), cfg.export.int8_min_agreement)
    # The drift monitor's reference window travels with the exported model (and its Bento).
    save_reference(run_dir.model, Path(data.root), run_dir.onnx / REFERENCE)
    reason = unavailable_reason() if cfg.export.tensorrt else "disabled by config (export.tensorrt=false)"
    if reason:
        record.tensorrt = {"built": False, "skipped": reason}
    else:
        from clip_har.export.tensorrt import build_engine, current_stamp

        size = onnx_meta.model.preprocess_config().image_size
        engine = build_engine(run_dir.onnx / IMAGE_ONNX, run_dir.tensorrt, size)
        record.tensorrt = {"built": True, "engine": str(engine), "stamp": asdict(current_stamp())}  # type: ignore[arg-type]
    backend = cfg.export.serve_backend if record.int8.get("shipped") else "onnx"
    return ExportSummary(str(run_dir.onnx), str(record.save(run_dir.export_record)), onnx_meta.image_sha256, backend)
