"""Evaluation metrics: accuracy, macro-F1, per-class P/R/F1, confusion matrix, calibration; the
report they make and its renderings. What is scored on which split: `clip_har.pipeline.evaluate`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


@dataclass
class EvalReport:
    split: str
    n: int
    accuracy: float
    macro_f1: float
    ece: float
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: Path) -> Path:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> EvalReport:
        return cls(**json.loads(Path(path).read_text()))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Mean |confidence - accuracy| over equal-width confidence bins, weighted by bin size."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            ece += mask.mean() * abs(conf[mask].mean() - correct[mask].mean())
    return float(ece)


def compute_metrics(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], split: str = "test") -> EvalReport:
    pred = probs.argmax(axis=1)
    idx = list(range(len(classes)))
    p, r, f1, support = precision_recall_fscore_support(labels, pred, labels=idx, zero_division=0)
    per_class = {
        c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f1[i]), "support": int(support[i])}
        for i, c in enumerate(classes)
    }
    return EvalReport(
        split=split,
        n=int(len(labels)),
        accuracy=float((pred == labels).mean()),
        macro_f1=float(np.mean(f1)),
        ece=expected_calibration_error(probs, labels),
        per_class=per_class,
        confusion=confusion_matrix(labels, pred, labels=idx).tolist(),
    )


def confusion_png(report: EvalReport, classes: Sequence[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # headless; no display on servers or CI
    import matplotlib.pyplot as plt

    cm = np.asarray(report.confusion)
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6)
    ax.set_title(f"{report.split}: acc {report.accuracy:.3f}, macro-F1 {report.macro_f1:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def markdown_summary(model: EvalReport, zero_shot: EvalReport) -> str:
    """The table shown as a Prefect artifact and logged to MLflow."""
    lines = [
        f"### Held-out evaluation ({model.split}, n={model.n})",
        "",
        "| | accuracy | macro-F1 | ECE |",
        "|---|---|---|---|",
        f"| fine-tuned | {model.accuracy:.3f} | {model.macro_f1:.3f} | {model.ece:.3f} |",
        f"| zero-shot | {zero_shot.accuracy:.3f} | {zero_shot.macro_f1:.3f} | {zero_shot.ece:.3f} |",
        "",
        "| class | precision | recall | F1 | zero-shot F1 |",
        "|---|---|---|---|---|",
    ]
    for c, m in model.per_class.items():
        zs = zero_shot.per_class.get(c, {}).get("f1", float("nan"))
        lines.append(f"| {c} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {zs:.3f} |")
    return "\n".join(lines)
