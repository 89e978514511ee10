"""TensorRT engines (optional `gpu` extra): fp16, one optimisation profile over the batch axis,
stamped with the TensorRT / CUDA / GPU they were built for and refused on any mismatch."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

ENGINE = "image.fp16.engine"
STAMP = "engine_stamp.json"


@dataclass(frozen=True)
class EngineStamp:
    tensorrt: str
    cuda: str
    gpu: str
    compute_capability: str


def current_stamp() -> EngineStamp | None:
    """The running machine's stamp, or None where TensorRT or a CUDA GPU is missing."""
    try:
        import tensorrt as trt
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return EngineStamp(trt.__version__, str(torch.version.cuda), torch.cuda.get_device_name(0), f"{major}.{minor}")


def unavailable_reason() -> str | None:
    """Why no engine can be built here (None when it can)."""
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU on this machine"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "tensorrt is not installed (pip install '.[gpu]')"
    return None


def check_stamp(engine_dir: Path, here: EngineStamp | None = None) -> str | None:
    """None if the engine in `engine_dir` may run here, else the reason it must not."""
    path = Path(engine_dir) / STAMP
    if not path.is_file():
        return "engine has no stamp"
    built = EngineStamp(**json.loads(path.read_text()))
    here = here if here is not None else current_stamp()
    if here is None:
        return "TensorRT/CUDA not available here"
    if built != here:
        return f"engine built for {asdict(built)}, this machine is {asdict(here)}"
    return None


def build_engine(onnx_path: Path, engine_dir: Path, image_size: int, batch: tuple[int, int, int] = (1, 8, 32)) -> Path:
    """Build an fp16 engine with a min/opt/max batch profile and write its stamp beside it."""
    import tensorrt as trt

    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    shape = (3, image_size, image_size)
    profile.set_shape("pixel_values", (batch[0], *shape), (batch[1], *shape), (batch[2], *shape))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT engine build failed")
    engine_dir = Path(engine_dir)
    engine_dir.mkdir(parents=True, exist_ok=True)
    (engine_dir / ENGINE).write_bytes(bytes(serialized))
    stamp = current_stamp()
    (engine_dir / STAMP).write_text(json.dumps(asdict(stamp) if stamp else {}, indent=2))
    return engine_dir / ENGINE
