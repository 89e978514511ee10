"""BentoML packaging: an exported model into the model store, and the Bento build."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import bentoml
import yaml

from clip_har.settings import load_settings

DEPLOYMENTS = Path(__file__).resolve().parent
PROJECT = DEPLOYMENTS.parent


def save_to_store(
    onnx_dir: Path, lineage: dict[str, str], name: str | None = None, model_dir: Path | None = None
) -> str:
    """Copy the exported model (ONNX graphs + metadata) into the BentoML model store under `name`
    (default: the `model_name` setting), and the PyTorch artifact beside it when given (the
    `pytorch` serving backend)."""
    from clip_har.export.onnx_export import OnnxMeta
    from clip_har.serving.predictor import TORCH_DIR

    meta = OnnxMeta.load(onnx_dir)
    labels = {"data_version": lineage.get("data_version", ""), "registry_version": lineage.get("registry_version", "")}
    metadata = {**lineage, "onnx_sha256": meta.image_sha256, "classes": json.dumps(meta.model.classes)}
    with bentoml.models.create(name or load_settings().model_name, labels=labels, metadata=metadata) as model:
        for f in Path(onnx_dir).iterdir():
            if f.is_file():
                shutil.copy2(f, Path(model.path) / f.name)
        if model_dir is not None:
            shutil.copytree(model_dir, Path(model.path) / TORCH_DIR)
    return str(model.tag)


def build_bento(model_tag: str) -> str:
    """`bentoml build` of the service from the repo root with `model_tag` in it (offline: no
    package locking). The bentofile names a default model; the one just saved replaces it, so the
    Bento holds this model whatever the `model_name` setting is."""
    spec = yaml.safe_load((DEPLOYMENTS / "bentofile.yaml").read_text())
    spec["models"] = [model_tag]
    with tempfile.TemporaryDirectory() as tmp:
        bentofile = Path(tmp) / "bentofile.yaml"
        bentofile.write_text(yaml.safe_dump(spec, sort_keys=False))
        cmd = [sys.executable, "-m", "bentoml", "build", "-f", str(bentofile), str(PROJECT), "--output", "tag"]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"bentoml build failed: {(out.stderr or out.stdout).strip()[-2000:]}")
    return out.stdout.strip().splitlines()[-1].removeprefix("__tag__:")


def package(onnx_dir: Path, lineage: dict[str, str], name: str, model_dir: Path | None = None) -> dict[str, str]:
    """Model store + Bento for a promoted model; returns the tags for the lineage record."""
    model_tag = save_to_store(onnx_dir, lineage, name, model_dir)
    return {"bento_model": model_tag, "bento": build_bento(model_tag)}
