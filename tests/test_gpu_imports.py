"""The GPU machine's image has PyTorch, Lightning, ONNX Runtime and little else (../shared/STACK.md,
"The GPU machine"): the model, training, export and predictor code, the `gpu` tests and
bench/gpu.py must import there with only the small wheels of ../shared/gpu/wheels.sh. Checked here
by running them in a subprocess where the MLOps stack (and the service's web stack) cannot be
imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Not on the GPU image (nor among the wheels that travel to it).
ABSENT = (
    "mlflow",
    "prefect",
    "bentoml",
    "great_expectations",
    "evidently",
    "dvc",
    "httpx",
    "pydantic_settings",
    "fastapi",
    "starlette",
    "typer",
    "sqlalchemy",
    "dask",
    "distributed",
    "psutil",
)

GPU_MODULES = (
    "clip_har.config",
    "clip_har.preprocess",
    "clip_har.models.factory",
    "clip_har.models.artifact",
    "clip_har.data.datamodule",
    "clip_har.train.module",
    "clip_har.train.trainer",
    "clip_har.train.launch",
    "clip_har.export.onnx_export",
    "clip_har.export.verify",
    "clip_har.export.tensorrt",
    "clip_har.serving.predictor",
    "clip_har.serving.batch",
    "clip_har.synth.generate",
    "bench.gpu",
)

# The modules holding `gpu` tests (collected, not run, under the same blocker).
GPU_TEST_FILES = ("tests/test_training.py", "tests/test_train_paths.py", "tests/test_backends.py")

BLOCKER = f"""
import importlib.abc, sys

ABSENT = {ABSENT!r}


class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
            raise ImportError(f"No module named {{name!r}} (absent on the GPU image)")
        return None


sys.meta_path.insert(0, Absent())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + code], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_blocker_blocks() -> None:
    out = _run("import mlflow")
    assert out.returncode != 0 and "absent on the GPU image" in out.stderr


def test_gpu_side_modules_import_without_the_mlops_stack() -> None:
    code = f"import importlib\nfor m in {GPU_MODULES!r}:\n    importlib.import_module(m)\nprint('imported')"
    out = _run(code)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "imported" in out.stdout


def test_gpu_tests_collect_without_the_mlops_stack() -> None:
    files = [f for f in GPU_TEST_FILES if (ROOT / f).is_file()]
    args = ["-q", "--collect-only", "-m", "gpu", "-p", "no:cacheprovider", *files]
    code = f"import pytest\nsys.exit(pytest.main({args!r}))"
    out = _run(code)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "test_train_on_one_gpu" in out.stdout


def test_the_gpu_bench_says_in_one_line_that_it_needs_cuda() -> None:
    if _cuda():
        pytest.skip("a CUDA GPU is here: the bench would run")
    out = subprocess.run([sys.executable, "bench/gpu.py"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "no CUDA GPU here" in out.stderr


def test_the_gpu_bench_runs_every_part_on_the_cpu_in_smoke_mode(tmp_path: Path) -> None:
    """The script itself (not a GPU figure): training loop vs bare step, every backend, JSON."""
    out_file = tmp_path / "gpu-smoke.json"
    cmd = [sys.executable, "bench/gpu.py", "--smoke", "--no-service", "--out", str(out_file)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out_file.read_text())
    assert result["device"]["device"] == "cpu" and result["training"]["loop"]["img_per_s"] > 0
    backends = result["inference"]["backends"]
    assert backends["onnx"]["img_per_s_b64"] > 0 and backends["pytorch"]["img_per_s_b64"] > 0
    assert "unavailable" in backends["onnx-cuda"] and result["inference"]["auto"]["backend"] == "onnx"
    refused = subprocess.run(
        [sys.executable, "bench/gpu.py", "--smoke", "--out", "bench/results/gpu.json"], cwd=ROOT, capture_output=True
    )
    assert refused.returncode == 2  # smoke figures never land where GPU figures belong


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
