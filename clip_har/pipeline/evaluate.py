"""evaluate: held-out metrics of the trained model, of zero-shot and of the current champion,
all on this run's test split; logged to MLflow. The metric math is `clip_har.metrics`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clip_har.config import PipelineConfig
from clip_har.data.datamodule import split_dataset
from clip_har.metrics import EvalReport, compute_metrics, confusion_png, markdown_summary
from clip_har.models.artifact import load_model
from clip_har.models.classifier import CLIPClassifier
from clip_har.models.factory import build_model
from clip_har.pipeline.prepare_data import DataRef
from clip_har.pipeline.rundir import EVAL, RunDir
from clip_har.preprocess import PreprocessConfig
from clip_har.registry import champion_model_dir
from clip_har.settings import StateDir
from clip_har.tracking import client
from clip_har.train.trainer import TrainResult


@dataclass
class EvalSummary:
    report: str  # JSON paths, so flows pass small values
    zero_shot: str
    confusion_png: str
    markdown: str
    accuracy: float
    macro_f1: float
    champion: str | None = None  # the champion's report on this same test split, when comparable


@torch.no_grad()
def predict_split(
    model: CLIPClassifier, root: Path, split: str, classes: Sequence[str], pre: PreprocessConfig, batch_size: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities [N, C] and true label indices [N] for one split."""
    ds = split_dataset(root, split, classes, pre, cache=False)
    model.eval()
    probs, labels = [], []
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size)
    for x, y in loader:
        probs.append(torch.softmax(model(x), dim=-1).numpy())
        labels.append(y.numpy())
    if not probs:
        raise ValueError(f"split {split!r} of {root} is empty")
    return np.concatenate(probs), np.concatenate(labels)


def champion_on_split(state: StateDir, model_name: str, root: Path, classes: Sequence[str]) -> EvalReport | None:
    """The current champion re-scored on this run's test split. The test split grows with
    ingested data (new conditions such as night photos), so the champion's stored score from its
    own run would compare the challenger against an easier exam. None: no comparable champion."""
    if not state.has_registry:
        return None
    try:
        _, model_dir = champion_model_dir(client(state.mlflow_uri), model_name, state.cache / "champion")
    except LookupError:
        return None
    model, _, meta = load_model(model_dir)
    if list(meta.classes) != list(classes):
        return None  # a different label set: the gate falls back to the stored report
    probs, labels = predict_split(model, root, "test", meta.classes, meta.preprocess_config())
    return compute_metrics(probs, labels, meta.classes)


def run(
    cfg: PipelineConfig,
    state: StateDir,
    model_name: str,
    trained: TrainResult,
    data: DataRef,
    base: str | None,
    run_dir: RunDir,
) -> EvalSummary:
    model, _, meta = load_model(run_dir.model)
    pre = meta.preprocess_config()
    probs, labels = predict_split(model, Path(data.root), "test", meta.classes, pre)
    report = compute_metrics(probs, labels, meta.classes)
    _, zs_model = build_model(cfg, Path(base) if base else None)
    zs_probs, zs_labels = predict_split(zs_model, Path(data.root), "test", meta.classes, pre)
    zero_shot = compute_metrics(zs_probs, zs_labels, meta.classes)
    out = run_dir.eval
    out.mkdir(exist_ok=True)
    champion = champion_on_split(state, model_name, Path(data.root), meta.classes)
    md = markdown_summary(report, zero_shot)
    (out / "summary.md").write_text(md)
    png = confusion_png(report, meta.classes, out / "confusion.png")
    summary = EvalSummary(
        str(report.save(run_dir.eval_report)),
        str(zero_shot.save(out / "zero_shot.json")),
        str(png),
        md,
        report.accuracy,
        report.macro_f1,
        str(champion.save(out / "champion.json")) if champion else None,
    )
    _log(state, trained.run_id, report, zero_shot, champion, out)
    return summary


def _log(
    state: StateDir, run_id: str, report: EvalReport, zero_shot: EvalReport, champion: EvalReport | None, out: Path
) -> None:
    c = client(state.mlflow_uri)
    metrics = {
        "test_accuracy": report.accuracy,
        "test_macro_f1": report.macro_f1,
        "test_ece": report.ece,
        "zero_shot_accuracy": zero_shot.accuracy,
        "zero_shot_macro_f1": zero_shot.macro_f1,
        **{f"test_f1.{k}": v["f1"] for k, v in report.per_class.items()},
    }
    if champion is not None:
        metrics["champion_test_macro_f1"] = champion.macro_f1
    for k, v in metrics.items():
        c.log_metric(run_id, k, v)
    c.log_artifacts(run_id, str(out), EVAL)  # the registry's champion_report() reads eval/report.json back
