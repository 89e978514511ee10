"""BentoML packaging: an exported model into the model store, and the Bento build."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import bentoml
import yaml

from clip_har.registry import ServedChampion, champion_bento, version_artifact
from clip_har.settings import StateDir, load_settings
from clip_har.tracking import client

DEPLOYMENTS = Path(__file__).resolve().parent
PROJECT = DEPLOYMENTS.parent


def save_to_store(
    onnx_dir: Path,
    lineage: dict[str, str],
    name: str | None = None,
    model_dir: Path | None = None,
    eval_report: Path | None = None,
) -> str:
    """Copy the exported model (ONNX graphs + metadata) into the BentoML model store under `name`
    (default: the `model_name` setting; a `name:version` tag keeps that version), and the
    PyTorch artifact beside it when given (the `pytorch` serving backend and explanations), and
    its held-out report (the model card's metrics and confusion matrix)."""
    from clip_har.export.onnx_export import OnnxMeta
    from clip_har.serving.card import write_eval_report
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
        if eval_report is not None:
            write_eval_report(eval_report, Path(model.path))
    return str(model.tag)


def served_champion(state: StateDir, name: str) -> ServedChampion:
    """The champion, in this host's BentoML model store. A host that did not package it (no
    shared disk: another machine ran the pipeline) fetches its export through the registry,
    which an MLflow tracking server serves over HTTP, and stores it under the same tag."""
    champion = champion_bento(state, name)
    try:
        bentoml.models.get(champion.bento_model)
        return champion
    except bentoml.exceptions.NotFound:
        pass
    from clip_har.export.onnx_export import ONNX_META
    from clip_har.models.artifact import META
    from clip_har.pipeline.rundir import EVAL, EVAL_REPORT, MODEL, ONNX

    # by the version champion_bento named: a promotion in between must not put another
    # version's weights under this version's tag
    c, version = client(state.mlflow_uri), champion.version
    onnx_dir = version_artifact(c, name, version, state.cache / "serving", ONNX, ONNX_META)
    import torch

    # the PyTorch weights too where `auto` may serve them (bf16 on a GPU) or the lineage asks for them
    pytorch = champion.backend == "pytorch" or torch.cuda.is_available()
    model_dir = version_artifact(c, name, version, state.cache / "champion", MODEL, META) if pytorch else None
    try:  # the model card's metrics; a version registered without a report still serves
        report = version_artifact(c, name, version, state.cache / "champion", EVAL, EVAL_REPORT) / EVAL_REPORT
    except LookupError:
        report = None
    tags = c.get_model_version(name, version).tags
    lineage = {k.removeprefix("lineage."): v for k, v in tags.items() if k.startswith("lineage.")}
    try:
        save_to_store(onnx_dir, {**lineage, "registry_version": version}, champion.bento_model, model_dir, report)
    except bentoml.exceptions.BentoMLException as exc:
        try:
            bentoml.models.get(champion.bento_model)  # another process stored it first
        except bentoml.exceptions.NotFound:
            raise exc from None
    return champion


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
        # the build reads the store this process saved the model to: BentoML fixes its home when
        # first imported, and the environment may name another one since (tests, several state dirs)
        home = Path(bentoml.models.get(model_tag).path).parents[2]
        env = {**os.environ, "BENTOML_HOME": str(home)}
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT, timeout=600, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"bentoml build failed: {(out.stderr or out.stdout).strip()[-2000:]}")
    return out.stdout.strip().splitlines()[-1].removeprefix("__tag__:")


def package(
    onnx_dir: Path, lineage: dict[str, str], name: str, model_dir: Path | None = None, eval_report: Path | None = None
) -> dict[str, str]:
    """Model store + Bento for a promoted model; returns the tags for the lineage record."""
    model_tag = save_to_store(onnx_dir, lineage, name, model_dir, eval_report)
    return {"bento_model": model_tag, "bento": build_bento(model_tag)}
