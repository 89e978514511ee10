"""TensorRT engines (optional `gpu` extra): built from the fp16 ONNX graph as a strongly typed
network (the graph's own types decide the precision; TensorRT 10 deprecates the weakly typed
`BuilderFlag.FP16` and 11 drops it), one optimisation profile over the batch axis, stamped with
the TensorRT / CUDA / GPU they were built for and refused on any mismatch. They are built into
the model directory and travel with it; the stamp keeps them from running anywhere else.

Nothing here runs on a machine without TensorRT and a CUDA GPU: there the export record says why
no engine was built, and the `tensorrt` backend refuses with the same reason."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ENGINE = "image.fp16.engine"
STAMP = "engine_stamp.json"
INPUT, OUTPUTS = "pixel_values", ("logits", "embedding")
# min / opt / max batch: the service batches up to 32, batch inference on a GPU 256
BATCH_PROFILE = (1, 64, 256)


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
    except (ImportError, OSError):  # OSError: the package is there, its shared libraries are not
        return None
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return EngineStamp(trt.__version__, str(torch.version.cuda), torch.cuda.get_device_name(0), f"{major}.{minor}")


def unavailable_reason() -> str | None:
    """Why no engine can be built or run here (None when it can)."""
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU on this machine"
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError):
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


def _strongly_typed(trt) -> int:  # the tensorrt module
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)  # a later release may drop the flag: always strongly typed


def build_engine(
    fp16_onnx: Path, engine_dir: Path, image_size: int, batch: tuple[int, int, int] = BATCH_PROFILE
) -> Path:
    """Build an engine from the fp16 graph (float32 inputs/outputs, fp16 inside) with a min/opt/max
    batch profile, and write its stamp beside it."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_strongly_typed(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(fp16_onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {fp16_onnx}: {errors}")
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    shape = (3, image_size, image_size)
    profile.set_shape(INPUT, (batch[0], *shape), (batch[1], *shape), (batch[2], *shape))
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


def discard_engine(engine_dir: Path) -> None:
    """Remove an engine that must not serve (it failed its check)."""
    for name in (ENGINE, STAMP):
        (Path(engine_dir) / name).unlink(missing_ok=True)


class EngineRunner:
    """A deserialised engine on PyTorch's CUDA memory: float32 [N,3,S,S] numpy → (logits,
    embedding) float32 numpy. Batches beyond the profile's maximum run in slices. TensorRT's own
    Python API plus torch tensors: no pycuda or cuda-python dependency."""

    def __init__(self, engine_path: Path) -> None:
        import tensorrt as trt
        import torch

        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)  # must outlive the engine
        self._engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self._engine is None:
            raise RuntimeError(f"TensorRT could not load {engine_path}")
        for name in OUTPUTS:  # the fp16 graph keeps float32 outputs (keep_io_types)
            if self._engine.get_tensor_dtype(name) != trt.DataType.FLOAT:
                raise RuntimeError(f"engine output {name} is {self._engine.get_tensor_dtype(name)}, not float32")
        self._context = self._engine.create_execution_context()
        self.max_batch = int(self._engine.get_tensor_profile_shape(INPUT, 0)[2][0])
        self._stream = torch.cuda.Stream()

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = [self._run(batch[i : i + self.max_batch]) for i in range(0, len(batch), self.max_batch)]
        logits, emb = (np.concatenate([p[k] for p in parts]) for k in (0, 1))
        return logits, emb

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.cuda.stream(self._stream):
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to("cuda")
            self._context.set_input_shape(INPUT, tuple(x.shape))
            self._context.set_tensor_address(INPUT, x.data_ptr())
            out = {}
            for name in OUTPUTS:
                out[name] = torch.empty(tuple(self._context.get_tensor_shape(name)), dtype=torch.float32, device="cuda")
                self._context.set_tensor_address(name, out[name].data_ptr())
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("TensorRT inference failed")
            self._stream.synchronize()
        return out["logits"].cpu().numpy(), out["embedding"].cpu().numpy()
