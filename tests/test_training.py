"""Training paths on the tiny model: resume, 2-process CPU DDP, FSDP2 on CPU, one CUDA GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clip_har.config import load_config
from clip_har.models.artifact import load_model
from clip_har.train.trainer import train


def test_train_then_resume_from_checkpoint(tiny_data: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = train(load_config("tiny", ["train.max_epochs=1"]), tiny_data, tmp_path / "a", tracking_uri=uri)
    assert first is not None and first.epochs == 1
    last = Path(first.last_checkpoint)
    assert last.is_file() and Path(first.best_checkpoint).is_file()
    assert torch.load(last, weights_only=False)["epoch"] == 0
    resumed = train(
        load_config("tiny", ["train.max_epochs=3"]), tiny_data, tmp_path / "b", tracking_uri=uri, resume=last
    )
    assert resumed is not None and resumed.epochs == 3
    assert torch.load(resumed.last_checkpoint, weights_only=False)["epoch"] == 2  # continued, not restarted
    model, _, meta = load_model(Path(resumed.model_dir))
    assert meta.lineage["mlflow_run_id"] == resumed.run_id and meta.classes[0] == "calling"


@pytest.mark.gpu
def test_train_on_one_gpu(tiny_data: Path, tmp_path: Path) -> None:
    cfg = load_config("tiny", ["train.accelerator=gpu", "train.devices=1", "train.max_epochs=1"])
    result = train(cfg, tiny_data, tmp_path / "run", tracking_uri="")  # the GPU image has no MLflow
    assert result is not None and result.epochs == 1
    model, bundle, meta = load_model(Path(result.model_dir))  # onto the CPU, whatever it trained on
    x = torch.rand(2, 3, bundle.image_size, bundle.image_size)
    with torch.no_grad():
        logits = model(x)
    assert logits.device.type == "cpu" and logits.shape == (2, len(meta.classes))
    assert torch.isfinite(logits).all()


def _launch(tiny_data: Path, tmp_path: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, Path]:
    result = tmp_path / "result.json"
    cmd = [sys.executable, "-m", "clip_har.train.launch", "--profile", "tiny", "--data-root", str(tiny_data)]
    cmd += ["--out", str(tmp_path / "run"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--result", str(result)]
    for o in overrides:
        cmd += ["--set", o]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env), result


@pytest.mark.integration
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_process_cpu_training(strategy: str, tiny_data: Path, tmp_path: Path) -> None:
    proc, result = _launch(
        tiny_data,
        tmp_path,
        f"train.strategy={strategy}",
        "train.devices=2",
        "train.accelerator=cpu",
        "train.max_epochs=1",
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "MEMBER: 2/2" in log  # a second rank really ran
    out = json.loads(result.read_text())
    model, _, _ = load_model(Path(out["model_dir"]))
    x = torch.zeros(2, 3, 32, 32)
    assert model(x).shape == (2, 15)
