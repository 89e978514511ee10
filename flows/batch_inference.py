"""batch-inference: the champion model over a folder, a CSV of paths, or videos → CSV/JSON."""

from __future__ import annotations

from prefect import flow

from clip_har.state import StateDir
from tasks.inference import champion_model, collect_inputs, predict_batch


@flow(name="batch-inference", log_prints=True)
def batch_inference(
    inputs: list[str],
    output: str = "predictions.csv",
    model_name: str = "clip-har",
    batch_size: int = 32,
    top_k: int = 3,
    video_fps: float = 1.0,
) -> dict:
    """Unreadable files are listed in the output with their error; they do not fail the run."""
    state = StateDir.from_env()
    version, onnx_dir = champion_model(state, model_name)
    files = collect_inputs(inputs)
    result = predict_batch(onnx_dir, files, output, batch_size, top_k, video_fps)
    return {**result, "model_version": version, "files": len(files)}
