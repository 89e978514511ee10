"""One training run's directory: what goes where. The names of the model, ONNX and evaluation
folders are also the MLflow artifact paths of the run, so the registry reads them back."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

MODEL, ONNX, EVAL = "model", "onnx", "eval"
LINEAGE = "lineage.json"
EVAL_REPORT = "report.json"  # in EVAL: the held-out report the gate compares champions by


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def new(cls, runs: Path) -> RunDir:
        """A fresh, uniquely named run directory under `runs`."""
        root = Path(runs) / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        root.mkdir(parents=True)
        return cls(root)

    @property
    def model(self) -> Path:
        """The PyTorch model artifact (what the trainer saves)."""
        return self.root / MODEL

    @property
    def onnx(self) -> Path:
        """The exported graphs, their metadata and the drift reference window."""
        return self.root / ONNX

    @property
    def eval(self) -> Path:
        return self.root / EVAL

    @property
    def eval_report(self) -> Path:
        return self.eval / EVAL_REPORT

    @property
    def tensorrt(self) -> Path:
        return self.root / "tensorrt"

    @property
    def data_gate(self) -> Path:
        return self.root / "data_gate.json"

    @property
    def checkpoints(self) -> Path:
        """Lightning's best and last checkpoints."""
        return self.root / "checkpoints"

    @property
    def train_key(self) -> Path:
        """Written when training starts: the training identity and its MLflow run, so a later
        run of the same identity can resume this one if it dies (clip_har.pipeline.resume)."""
        return self.root / "train_key.json"

    @property
    def train_lock(self) -> Path:
        """Held while this run trains: a run whose lock is free and has no TrainResult was killed."""
        return self.root / ".train.lock"

    @property
    def train_result(self) -> Path:
        """The TrainResult, written once training completed (rank 0 of a multi-process run)."""
        return self.root / "train_result.json"

    @property
    def resumed_by(self) -> Path:
        """In an interrupted run: the run that continued its training (so no other one does)."""
        return self.root / "resumed_by.json"

    @property
    def export_record(self) -> Path:
        return self.root / "export_record.json"

    @property
    def gate_decision(self) -> Path:
        return self.root / "gate_decision.json"

    @property
    def lineage(self) -> Path:
        return self.root / LINEAGE
