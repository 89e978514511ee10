"""batch-inference: the champion model over a folder, a CSV of paths, or videos → CSV/JSON."""

from __future__ import annotations

from prefect import flow

from clip_har.serving.batch import BATCH_SIZE, TOP_K, VIDEO_FPS
from clip_har.settings import load_settings
from tasks.inference import champion_model, collect_inputs, predict_batch, predict_distributed


@flow(name="batch-inference", log_prints=True)
def batch_inference(
    inputs: list[str],
    output: str = "predictions.csv",
    model_name: str = "",
    batch_size: int = BATCH_SIZE,
    top_k: int = TOP_K,
    video_fps: float = VIDEO_FPS,
    dask_address: str = "",
) -> dict:
    """Unreadable files are listed in the output with their error; they do not fail the run.
    `model_name`: the registered model (default: the `model_name` setting). `dask_address`: a
    Dask scheduler (tcp://host:8786) whose workers share the files out (default: the
    `dask_address` setting; empty: this process)."""
    settings = load_settings()
    version, onnx_dir = champion_model(settings.state, model_name or settings.model_name)
    files = collect_inputs(inputs)
    address = dask_address or settings.dask_address
    if address:
        result = predict_distributed(address, onnx_dir, files, output, batch_size, top_k, video_fps)
    else:
        result = predict_batch(onnx_dir, files, output, batch_size, top_k, video_fps)
    return {**result, "model_version": version, "files": len(files)}
