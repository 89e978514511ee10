"""Batch-inference tasks."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from clip_har.registry import champion_onnx
from clip_har.serving import batch
from clip_har.settings import StateDir, load_settings
from clip_har.tracking import client


@task(name="champion-model", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def champion_model(state: StateDir, model_name: str) -> tuple[str, str]:
    version, onnx_dir = champion_onnx(client(state.mlflow_uri), model_name, state.cache / "serving")
    return version, str(onnx_dir)


@task(name="collect-inputs", cache_policy=NO_CACHE)
def collect_inputs(inputs: list[str]) -> list[Path]:
    return batch.collect(Path(p) for p in inputs)


@task(name="predict-batch", cache_policy=NO_CACHE)
def predict_batch(onnx_dir: str, files: list[Path], output: str, batch_size: int, top_k: int, video_fps: float) -> dict:
    from tqdm import tqdm

    from clip_har.serving.predictor import Predictor

    # the `backend` setting: `auto` (default) takes the fastest backend that passed its checks here
    predictor = Predictor(Path(onnx_dir), load_settings().backend)
    get_run_logger().info("backend %s (%s)", predictor.backend, predictor.why)
    with tqdm(total=len(files), desc="predict", unit="file") as bar:
        rows = batch.predict_files(predictor, files, batch_size, top_k, video_fps, progress=bar.update)
    return _written(rows, output)


@task(name="predict-distributed", cache_policy=NO_CACHE)
def predict_distributed(
    address: str, onnx_dir: str, files: list[Path], output: str, batch_size: int, top_k: int, video_fps: float
) -> dict:
    """The same rows as `predict-batch`, computed in chunks by the Dask cluster at `address`."""
    from tqdm import tqdm

    from clip_har.serving.distributed import predict_distributed

    with tqdm(total=len(files), desc="predict", unit="file") as bar:
        backend = load_settings().backend  # `auto`: each worker picks for its own machine
        rows = predict_distributed(
            address, Path(onnx_dir), files, batch_size, top_k, video_fps, progress=bar.update, backend=backend
        )
    return _written(rows, output)


def _written(rows: list[batch.Row], output: str) -> dict:
    out = batch.write_rows(rows, Path(output))
    errors = sum(1 for r in rows if r.error)
    get_run_logger().info("%d rows (%d unreadable files) → %s", len(rows), errors, out)
    return {"output": str(out), "rows": len(rows), "errors": errors}
