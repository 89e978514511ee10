"""The pipeline's stages as plain functions: small inputs (config, paths, ids), small outputs.

Prefect tasks wrap exactly one of these each; tests call them directly. Nothing here knows
about an orchestrator.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from clip_har.config import PipelineConfig
from clip_har.data.manifest import from_csv, from_folder
from clip_har.data.validate import ValidationReport, require_valid, validate_data
from clip_har.data.versioning import DataVersion, commit_version, dataset_dir, init_registry
from clip_har.evaluate import EvalReport, compute_metrics, confusion_png, markdown_summary, predict_split
from clip_har.gate import GateDecision, decide
from clip_har.registry import (
    LINEAGE_ARTIFACT,
    REPORT_ARTIFACT,
    Registration,
    champion_model_dir,
    champion_report,
    register,
)
from clip_har.state import StateDir
from clip_har.synth.generate import SynthSpec, synthesize
from clip_har.tracking import client, ensure_experiment, git_sha, leaves
from clip_har.train.trainer import TrainResult


@dataclass
class DataRef:
    name: str
    root: str
    source: str


@dataclass
class EvalSummary:
    report: str  # JSON paths, so flows pass small values
    zero_shot: str
    confusion_png: str
    markdown: str
    accuracy: float
    macro_f1: float
    champion: str | None = None  # the champion's report on this same test split, when comparable


def synth_spec(
    cfg: PipelineConfig, n: int | None = None, seed: int | None = None, style: str | None = None
) -> SynthSpec:
    """The profile's synthetic world, optionally another sample of it (n, seed) or another style."""
    s = cfg.data.synth
    return SynthSpec(
        n=n or s.n,
        seed=s.seed if seed is None else seed,
        size=s.size,
        classes=tuple(cfg.data.classes),
        priors=tuple(s.priors),
        style=style or s.style,
        splits=tuple(cfg.data.splits),  # type: ignore[arg-type]
    )


def prepare_data(cfg: PipelineConfig, state: StateDir) -> DataRef:
    """Synthesize or ingest the dataset into the data registry's work tree."""
    init_registry(state.data_registry, state.dvc_remote)
    dest = dataset_dir(state.data_registry, cfg.data.name)
    d = cfg.data
    if d.source == "synth":
        synthesize(dest, synth_spec(cfg))
    elif not d.path:
        raise ValueError(f"data.source={d.source} needs data.path")
    elif d.source == "folder":
        from_folder(Path(d.path), dest, d.splits, d.split_seed)
    else:
        from_csv(Path(d.path), dest, d.splits, d.split_seed)
    return DataRef(d.name, str(dest), d.source)


def validate_stage(cfg: PipelineConfig, data: DataRef, out: Path) -> ValidationReport:
    """Run the data gate, save its JSON result; raises DataValidationError on failure."""
    d = cfg.data
    report = validate_data(Path(data.root), d.classes, d.min_per_class, d.min_side, d.max_side)
    out.parent.mkdir(parents=True, exist_ok=True)
    report.save(out)
    return require_valid(report)


def ingest_stage(cfg: PipelineConfig, state: StateDir, folder: Path, report_path: Path) -> tuple[DataRef, int]:
    """Newly labelled images (e.g. the review queue's export) into the profile's dataset, gated."""
    from clip_har.data.merge import merge_folder
    from clip_har.data.validate import DataValidationError

    d = cfg.data
    root = dataset_dir(state.data_registry, d.name)
    if not (root / "manifest.csv").is_file():
        raise FileNotFoundError(f"dataset {d.name!r} does not exist yet: run the training pipeline first")
    report_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        added, report = merge_folder(
            root, folder, d.classes, d.min_per_class, d.splits, d.split_seed, gate=(d.min_side, d.max_side)
        )
    except DataValidationError as exc:
        exc.report.save(report_path)
        raise
    report.save(report_path)
    return DataRef(d.name, str(root), "ingest"), added


def version_stage(state: StateDir, data: DataRef) -> DataVersion:
    return commit_version(state.data_registry, data.name)


def base_weights(cfg: PipelineConfig, state: StateDir) -> str | None:
    """The base CLIP weights for training: the project's own contrastive pre-training when
    enabled (cached by its inputs), otherwise None: build_clip loads `model.pretrained` itself."""
    if not cfg.pretrain.enabled:
        return None
    import torch

    from clip_har.models.presets import build_clip
    from clip_har.models.pretrain import PretrainSpec, pretrain

    p = cfg.pretrain
    spec = synth_spec(cfg, n=p.n, seed=p.seed)
    key_src = json.dumps([cfg.model.preset, p.model_dump(), spec.as_json()], sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:12]
    out = state.cache / "base" / f"{cfg.model.preset}-{key}.pt"
    if out.is_file():
        return str(out)
    pairs = synthesize(state.cache / "pretrain-data" / key, spec)
    torch.manual_seed(p.seed)  # the random init too, so the same inputs give the same base
    bundle = build_clip(cfg.model.preset)
    pretrain(bundle, pairs, PretrainSpec(p.epochs, p.batch_size, p.lr, seed=p.seed), out)
    return str(out)


def new_run_dir(state: StateDir) -> Path:
    run = state.runs / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    run.mkdir(parents=True)
    return run


def train_stage(
    cfg: PipelineConfig, state: StateDir, data: DataRef, version: DataVersion, base: str | None, run_dir: Path
) -> TrainResult:
    """Fit in-process for one device; in a child process for DDP/FSDP (ranks re-exec it)."""
    c = client(state.mlflow_uri)
    ensure_experiment(c, cfg.registry.experiment, state.mlflow_artifacts)
    args = dict(tracking_uri=state.mlflow_uri, base_weights=Path(base) if base else None, data_version=version.tag)
    if cfg.train.strategy == "auto" and cfg.train.devices == 1:
        from clip_har.train.trainer import train

        result = train(cfg, Path(data.root), run_dir, **args)  # type: ignore[arg-type]
        assert result is not None  # single process is rank 0
        return result
    result_file = run_dir / "train_result.json"
    cmd = [sys.executable, "-m", "clip_har.train.launch", "--profile", cfg.profile]
    for key, value in _overrides_of(cfg).items():
        cmd += ["--set", f"{key}={value}"]
    cmd += ["--data-root", data.root, "--out", str(run_dir), "--tracking-uri", state.mlflow_uri]
    cmd += ["--data-version", version.tag, "--result", str(result_file)]
    if base:
        cmd += ["--base-weights", base]
    proc = subprocess.run(cmd, env={**os.environ, **state.env()})
    if proc.returncode != 0 or not result_file.is_file():
        raise RuntimeError(f"distributed training failed (exit {proc.returncode}); see the log above")
    return TrainResult(**json.loads(result_file.read_text()))


def _overrides_of(cfg: PipelineConfig) -> dict[str, str]:
    """The full config as dotted overrides, so the child process rebuilds exactly this config."""
    tree = cfg.model_dump(mode="json", exclude={"profile"})
    return {k: json.dumps(v) for k, v in leaves(tree).items()}  # JSON is valid YAML for the parser


def evaluate_stage(
    cfg: PipelineConfig, state: StateDir, trained: TrainResult, data: DataRef, base: str | None
) -> EvalSummary:
    """Held-out metrics of the trained model and of zero-shot on the same split; logged to MLflow."""
    from clip_har.models.artifact import load_model
    from clip_har.models.factory import build_model

    model, _, meta = load_model(Path(trained.model_dir))
    pre = meta.preprocess_config()
    probs, labels = predict_split(model, Path(data.root), "test", meta.classes, pre)
    report = compute_metrics(probs, labels, meta.classes)
    _, zs_model = build_model(cfg, Path(base) if base else None)
    zs_probs, zs_labels = predict_split(zs_model, Path(data.root), "test", meta.classes, pre)
    zero_shot = compute_metrics(zs_probs, zs_labels, meta.classes)
    out = Path(trained.model_dir).parent / "eval"
    out.mkdir(exist_ok=True)
    champion = champion_on_split(cfg, state, Path(data.root), meta.classes)
    md = markdown_summary(report, zero_shot)
    (out / "summary.md").write_text(md)
    png = confusion_png(report, meta.classes, out / "confusion.png")
    summary = EvalSummary(
        str(report.save(out / "report.json")),
        str(zero_shot.save(out / "zero_shot.json")),
        str(png),
        md,
        report.accuracy,
        report.macro_f1,
        str(champion.save(out / "champion.json")) if champion else None,
    )
    _log_eval(state, trained.run_id, report, zero_shot, out)
    if champion is not None:
        client(state.mlflow_uri).log_metric(trained.run_id, "champion_test_macro_f1", champion.macro_f1)
    return summary


def champion_on_split(cfg: PipelineConfig, state: StateDir, root: Path, classes: Sequence[str]) -> EvalReport | None:
    """The current champion re-scored on this run's test split. The test split grows with
    ingested data (new conditions such as night photos), so the champion's stored score from its
    own run would compare the challenger against an easier exam. None: no comparable champion."""
    from clip_har.models.artifact import load_model

    if not state.mlflow_db.is_file():
        return None
    try:
        _, model_dir = champion_model_dir(client(state.mlflow_uri), cfg.registry.model_name, state.cache / "champion")
    except LookupError:
        return None
    model, _, meta = load_model(model_dir)
    if list(meta.classes) != list(classes):
        return None  # a different label set: the gate falls back to the stored report
    probs, labels = predict_split(model, root, "test", meta.classes, meta.preprocess_config())
    return compute_metrics(probs, labels, meta.classes)


def _log_eval(state: StateDir, run_id: str, report: EvalReport, zero_shot: EvalReport, out: Path) -> None:
    c = client(state.mlflow_uri)
    metrics = {
        "test_accuracy": report.accuracy,
        "test_macro_f1": report.macro_f1,
        "test_ece": report.ece,
        "zero_shot_accuracy": zero_shot.accuracy,
        "zero_shot_macro_f1": zero_shot.macro_f1,
        **{f"test_f1.{k}": v["f1"] for k, v in report.per_class.items()},
    }
    for k, v in metrics.items():
        c.log_metric(run_id, k, v)
    # champion_report() reads eval/report.json (REPORT_ARTIFACT) back from here
    c.log_artifacts(run_id, str(out), REPORT_ARTIFACT.split("/")[0])


@dataclass
class ExportSummary:
    onnx_dir: str
    record: str
    image_sha256: str
    serve_backend: str  # the backend the gate checked and the service will use


def export_stage(cfg: PipelineConfig, trained: TrainResult, data: DataRef) -> ExportSummary:
    """ONNX export + parity/int8/latency checks (+ TensorRT where possible) into the run dir."""
    from clip_har.export.onnx_export import export_onnx
    from clip_har.export.tensorrt import unavailable_reason
    from clip_har.export.verify import verify_export
    from clip_har.monitoring.reference import REFERENCE, save_reference

    run_dir = Path(trained.model_dir).parent
    onnx_meta = export_onnx(Path(trained.model_dir), run_dir / "onnx")
    record = verify_export(Path(trained.model_dir), run_dir / "onnx", Path(data.root), cfg.export.int8_min_agreement)
    # The drift monitor's reference window travels with the exported model (and its Bento).
    save_reference(Path(trained.model_dir), Path(data.root), run_dir / "onnx" / REFERENCE)
    reason = unavailable_reason() if cfg.export.tensorrt else "disabled by config (export.tensorrt=false)"
    if reason:
        record.tensorrt = {"built": False, "skipped": reason}
    else:
        from clip_har.export.tensorrt import build_engine, current_stamp

        size = onnx_meta.model.preprocess_config().image_size
        engine = build_engine(run_dir / "onnx" / "image.onnx", run_dir / "tensorrt", size)
        record.tensorrt = {"built": True, "engine": str(engine), "stamp": asdict(current_stamp())}  # type: ignore[arg-type]
    backend = cfg.export.serve_backend if record.int8.get("shipped") else "onnx"
    return ExportSummary(
        str(run_dir / "onnx"), str(record.save(run_dir / "export_record.json")), onnx_meta.image_sha256, backend
    )


def gate_stage(
    cfg: PipelineConfig, state: StateDir, ev: EvalSummary, export: ExportSummary | None = None
) -> GateDecision:
    from clip_har.export.verify import ExportRecord

    version, champion = champion_report(client(state.mlflow_uri), cfg.registry.model_name)
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


def register_stage(
    cfg: PipelineConfig,
    state: StateDir,
    trained: TrainResult,
    decision: GateDecision,
    version: DataVersion,
    validation_report: str,
    export: ExportSummary | None = None,
) -> Registration:
    """Log model + decision + lineage to the run, then create the registry version."""
    c = client(state.mlflow_uri)
    run_dir = Path(trained.model_dir).parent
    lineage = {
        "data_version": version.tag,
        "data_md5": version.md5,
        "data_commit": version.commit,
        "data_registry": version.registry,
        "gx_result": validation_report,
        "mlflow_run_id": trained.run_id,
        "git_sha": git_sha(),
        "profile": cfg.profile,
    }
    if export is not None:
        lineage["onnx_sha256"] = export.image_sha256
        lineage["serve_backend"] = export.serve_backend
        c.log_artifacts(trained.run_id, export.onnx_dir, "onnx")
        c.log_artifact(trained.run_id, export.record)
    (run_dir / "gate_decision.json").write_text(decision.to_json())
    (run_dir / LINEAGE_ARTIFACT).write_text(json.dumps(lineage, indent=2))
    c.log_artifacts(trained.run_id, trained.model_dir, "model")
    c.log_artifact(trained.run_id, str(run_dir / "gate_decision.json"))
    c.log_artifact(trained.run_id, str(run_dir / LINEAGE_ARTIFACT))
    c.set_tag(trained.run_id, "gate", "pass" if decision.promote else "reject")
    return register(c, cfg.registry.model_name, trained.run_id, decision, lineage)


def record_package(state: StateDir, trained: TrainResult, reg: Registration, tags: dict[str, str]) -> dict[str, str]:
    """Complete the lineage (… → ONNX sha256 → Bento tag) in the run dir, MLflow run and version."""
    c = client(state.mlflow_uri)
    path = Path(trained.model_dir).parent / LINEAGE_ARTIFACT
    lineage = {**json.loads(path.read_text()), "registry_version": reg.version, **tags}
    path.write_text(json.dumps(lineage, indent=2))
    c.log_artifact(trained.run_id, str(path))
    for key, value in tags.items():
        c.set_model_version_tag(reg.model_name, reg.version, f"lineage.{key}", value)
    return lineage


def summary(reg: Registration, ev: EvalSummary, decision: GateDecision, data_version: DataVersion) -> dict:
    return {
        "registration": reg.to_dict(),
        "accuracy": ev.accuracy,
        "macro_f1": ev.macro_f1,
        "gate": decision.to_dict(),
        "data_version": data_version.to_dict(),
        "eval": asdict(ev) | {"markdown": None},
    }
