"""Export checks: ONNX vs PyTorch parity on held-out images, the int8 variant's agreement and
speed, the fp16 variant's agreement (and PyTorch bf16's, where a CUDA GPU is present), and
single-image CPU latency per backend. The results form the export record, which is also written
into the model directory: the `auto` backend reads there which variants passed."""

from __future__ import annotations

import functools
import json
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from clip_har.data.manifest import read_manifest
from clip_har.export.onnx_export import IMAGE_ONNX
from clip_har.models.artifact import load_model, read_meta
from clip_har.preprocess import preprocess

INT8_ONNX = "image.int8.onnx"
FP16_ONNX = "image.fp16.onnx"
RECORD = "export_record.json"  # its copy in the model directory (what `auto` reads)
CUDA_EP, CPU_EP = "CUDAExecutionProvider", "CPUExecutionProvider"
# A reduced-precision variant (fp16 graph, PyTorch bf16, TensorRT fp16) ships only if its largest
# logit error stays within this share of the largest fp32 logit, besides agreeing on top-1. The
# gate's absolute 1e-3 is an fp32 bound: on the tiny test model (CPU) fp16 errs by 0.06 % of the
# largest logit and bf16 by 0.7 %, and deeper models add up more rounding. 5 % still catches a
# conversion gone wrong (an overflow, a clamped weight) that agreement alone would let through.
HALF_MAX_REL_DIFF = 0.05


@dataclass
class Parity:
    n: int
    max_abs_logit_diff: float
    top1_agreement: float


@dataclass
class Latency:
    backend: str
    batch: int
    p50_ms: float
    p95_ms: float


@dataclass
class ExportRecord:
    parity: Parity
    latency: list[Latency]  # CPU backends only: what the gate's latency budget reads
    int8: dict[str, object] = field(default_factory=dict)  # agreement, speed-up, shipped, why
    tensorrt: dict[str, object] = field(default_factory=dict)
    fp16: dict[str, object] = field(default_factory=dict)  # agreement, max |Δ logit|, where, shipped, why
    bf16: dict[str, object] = field(default_factory=dict)  # PyTorch bf16 on a CUDA GPU, or why not measured
    serve_backend: str = "onnx"  # the CPU backend the gate checked: what `auto` serves without a GPU

    def to_dict(self) -> dict:
        return asdict(self)

    def p95(self, backend: str) -> float | None:
        return next((lat.p95_ms for lat in self.latency if lat.backend == backend), None)

    def save(self, path: Path) -> Path:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> ExportRecord:
        raw = json.loads(Path(path).read_text())
        return cls(
            Parity(**raw["parity"]),
            [Latency(**x) for x in raw["latency"]],
            raw.get("int8", {}),
            raw.get("tensorrt", {}),
            raw.get("fp16", {}),
            raw.get("bf16", {}),
            raw.get("serve_backend", "onnx"),  # records written before it: the default config's
        )


def cuda_refusal() -> str | None:
    """Why ONNX Runtime cannot use CUDA here (None when it can)."""
    import onnxruntime as ort

    providers = ort.get_available_providers()
    if CUDA_EP in providers:
        return None
    return (
        f"this ONNX Runtime has no {CUDA_EP} (it has {', '.join(providers)}): "
        "pip uninstall onnxruntime, then pip install '.[gpu]'"
    )


@functools.cache
def _preload_dlls() -> None:
    """Once per process: finds the CUDA/cuDNN libraries PyTorch's wheels brought (ORT prints a line
    for each library it cannot load, so not on every session)."""
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()


def ort_session(path: Path, threads: int = 0, spin: bool = True, cuda: bool = False):  # onnxruntime.InferenceSession
    """`spin=False` for servers: ORT's idle worker threads otherwise busy-wait between runs and
    take the CPU that request decoding and HTTP need in the other processes. `cuda`: on the CUDA
    execution provider (RuntimeError where it cannot run)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if Path(path).name == FP16_ONNX:
        # the CPU layout pass of level ALL crashes the process on fp16 graphs (microsoft/onnxruntime#15494);
        # on CUDA the level adds nothing (its layout passes are the CPU's)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.log_severity_level = 3
    if not cuda:
        return ort.InferenceSession(str(path), sess_options=opts, providers=[CPU_EP])
    refusal = cuda_refusal()
    if refusal:
        raise RuntimeError(refusal)
    _preload_dlls()
    # use_tf32=0: "fp32" means fp32 here; TF32 matmuls give ~2e-3 logit error (the gate allows 1e-3),
    # and the fast reduced-precision path is the fp16 graph, checked as such.
    providers = [(CUDA_EP, {"use_tf32": "0"}), CPU_EP]
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    if sess.get_providers()[0] != CUDA_EP:  # ORT falls back to the CPU when no device answers
        raise RuntimeError(f"ONNX Runtime could not start {CUDA_EP} (no CUDA device?)")
    return sess


def held_out_batch(model_dir: Path, data_root: Path, split: str = "test", n: int = 64) -> np.ndarray:
    """Up to `n` preprocessed images of a split, with the model's own preprocessing."""
    pre = read_meta(model_dir).preprocess_config()  # metadata only: no weights to load
    df = read_manifest(data_root)
    paths = df.loc[df["split"] == split, "path"].tolist()[:n]
    if not paths:
        raise ValueError(f"no {split} images under {data_root} for the parity check")
    return np.stack([preprocess(Path(data_root) / p, pre) for p in paths])


def onnx_logits(path: Path, images: np.ndarray, cuda: bool = False) -> np.ndarray:
    return ort_session(path, cuda=cuda).run(["logits"], {"pixel_values": images})[0]


def parity(model: torch.nn.Module, onnx_path: Path, images: np.ndarray, got: np.ndarray | None = None) -> Parity:
    """ONNX vs the (already loaded) PyTorch classifier on the same images; `got`: the ONNX graph's
    logits on them, when the caller has them already."""
    with torch.no_grad():
        ref = model(torch.from_numpy(images)).numpy()
    got = onnx_logits(onnx_path, images) if got is None else got
    return Parity(len(images), float(np.abs(got - ref).max()), float((got.argmax(1) == ref.argmax(1)).mean()))


def agreement(a_path: Path, b_path: Path, images: np.ndarray) -> float:
    a, b = onnx_logits(a_path, images), onnx_logits(b_path, images)
    return float((a.argmax(1) == b.argmax(1)).mean())


def quantize_int8(src: Path, dst: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    return dst


def convert_fp16(src: Path, dst: Path) -> Path:
    """fp16 weights and arithmetic, float32 inputs and outputs (keep_io_types): callers and the
    preprocessing stay as they are. The converter ships inside onnxruntime: no new dependency."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    _sort_nodes(model.graph)
    onnx.save(model, str(dst))
    return dst


def _sort_nodes(graph) -> None:  # onnx.GraphProto
    """Topological order (Kahn): the converter appends the input casts after their consumers,
    which onnx.checker and TensorRT's parser reject (onnxconverter-common#208)."""
    nodes = list(graph.node)
    producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    needs = [{producer[x] for x in n.input if x in producer} for n in nodes]
    consumers: dict[int, list[int]] = {}
    for i, deps in enumerate(needs):
        for j in deps:
            consumers.setdefault(j, []).append(i)
    waiting = [len(deps) for deps in needs]
    ready = deque(i for i, w in enumerate(waiting) if w == 0)
    order: list[int] = []
    while ready:
        i = ready.popleft()
        order.append(i)
        for j in consumers.get(i, []):
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    if len(order) != len(nodes):
        raise ValueError("the fp16 graph has a cycle")
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)


def half_check(ref: np.ndarray, got: np.ndarray, min_agreement: float, where: str) -> dict[str, object]:
    """A reduced-precision variant's logits against fp32's: agreement, largest error, and whether
    it may ship (with the reasons when not)."""
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    diff = float(np.abs(got - ref).max()) if np.isfinite(got).all() else None
    bound = HALF_MAX_REL_DIFF * float(np.abs(ref).max())
    reasons = []
    if agree < min_agreement:
        reasons.append(f"top-1 agreement {agree:.4f} < {min_agreement}")
    if diff is None:
        reasons.append("non-finite logits (an fp16 overflow)")
    elif diff > bound:
        reasons.append(f"max |Δ logit| {diff:.3g} > {bound:.3g} ({HALF_MAX_REL_DIFF:.0%} of the largest fp32 logit)")
    return {
        "agreement": agree,
        "max_abs_logit_diff": diff,
        "measured_on": where,
        "shipped": not reasons,
        "why_not": reasons,
    }


def _percentiles(fn, runs: int, warmup: int) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def onnx_latency(path: Path, image: np.ndarray, backend: str, runs: int = 50, warmup: int = 5) -> Latency:
    sess = ort_session(path)
    x = image[None] if image.ndim == 3 else image
    p50, p95 = _percentiles(lambda: sess.run(["logits"], {"pixel_values": x}), runs, warmup)
    return Latency(backend, len(x), round(p50, 3), round(p95, 3))


def torch_latency(model: torch.nn.Module, image: np.ndarray, runs: int = 50, warmup: int = 5) -> Latency:
    x = torch.from_numpy(image[None] if image.ndim == 3 else image)

    def run() -> None:
        with torch.no_grad():
            model(x)

    p50, p95 = _percentiles(run, runs, warmup)
    return Latency("pytorch", len(x), round(p50, 3), round(p95, 3))


def check_int8(fp32: Path, images: np.ndarray, record: ExportRecord, min_agreement: float) -> dict[str, object]:
    """Quantise, measure, and keep the int8 graph only if it agrees and is faster (deleted otherwise)."""
    int8 = quantize_int8(fp32, fp32.with_name(INT8_ONNX))
    agree = agreement(fp32, int8, images)
    record.latency.append(onnx_latency(int8, images[0], "onnx-int8"))
    speedup = (record.p95("onnx") or 0) / max(record.p95("onnx-int8") or 1e-9, 1e-9)
    reasons = []
    if agree < min_agreement:
        reasons.append(f"top-1 agreement {agree:.4f} < {min_agreement}")
    if speedup <= 1.0:
        reasons.append(f"not faster than fp32 on this model (p95 speed-up {speedup:.2f}x)")
    if reasons:
        int8.unlink()  # never leave an artifact that must not ship
    return {"agreement": agree, "p95_speedup": round(speedup, 3), "shipped": not reasons, "why_not": reasons}


def check_fp16(fp32: Path, images: np.ndarray, ref: np.ndarray, min_agreement: float) -> dict[str, object]:
    """Convert, and keep the fp16 graph only if it agrees with fp32 (deleted otherwise). Measured
    on the CUDA provider where this machine has one (where it will serve), else on the CPU's,
    whose missing fp16 kernels compute in fp32 between fp16 roundings: close, not identical."""
    fp16 = convert_fp16(fp32, fp32.with_name(FP16_ONNX))
    cuda = cuda_refusal() is None and torch.cuda.is_available()
    try:
        result = half_check(ref, onnx_logits(fp16, images, cuda=cuda), min_agreement, CUDA_EP if cuda else CPU_EP)
    except Exception as exc:  # a provider listed but unable to start, a kernel missing: fp16 is optional
        why = f"could not run: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        result = {"shipped": False, "why_not": [why]}
    if not result["shipped"]:
        fp16.unlink()
    return result


def check_bf16(model: torch.nn.Module, images: np.ndarray, ref: np.ndarray, min_agreement: float) -> dict[str, object]:
    """The `pytorch` backend's bf16 autocast on a CUDA GPU against fp32 (the model ends on the GPU)."""
    if not torch.cuda.is_available():
        return {"measured": False, "why_not": ["no CUDA GPU where the export ran"]}
    model = model.to("cuda")
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        got = model(torch.from_numpy(images).to("cuda")).float().cpu().numpy()
    return {"measured": True, **half_check(ref, got, min_agreement, torch.cuda.get_device_name(0))}


def check_engine(engine: Path, model_dir: Path, data_root: Path, min_agreement: float) -> dict[str, object]:
    """A TensorRT engine's logits against the fp32 graph's (beside it) on the held-out images, as
    the fp16 graph is checked."""
    from clip_har.export.tensorrt import EngineRunner

    images = held_out_batch(model_dir, data_root)
    ref = onnx_logits(Path(engine).parent / IMAGE_ONNX, images)
    return half_check(ref, EngineRunner(engine)(images)[0], min_agreement, "TensorRT")


def verify_export(
    model_dir: Path,
    onnx_dir: Path,
    data_root: Path,
    min_int8_agreement: float = 0.99,
    min_half_agreement: float = 0.99,
    fp16: bool = True,
) -> ExportRecord:
    """Parity, CPU latency for PyTorch / ORT fp32 / ORT int8, whether int8 and fp16 ship, and
    PyTorch bf16's agreement where a GPU is present; saved into `onnx_dir` too."""
    images = held_out_batch(model_dir, data_root)
    model = load_model(model_dir)[0].eval()
    fp32 = Path(onnx_dir) / IMAGE_ONNX
    ref = onnx_logits(fp32, images)  # the graph the gate checked: what every variant must agree with
    record = ExportRecord(parity(model, fp32, images, ref), [torch_latency(model, images[0])])
    record.latency.append(onnx_latency(fp32, images[0], "onnx"))
    record.int8 = check_int8(fp32, images, record, min_int8_agreement)
    if fp16:
        record.fp16 = check_fp16(fp32, images, ref, min_half_agreement)
    else:
        record.fp16 = {"shipped": False, "why_not": ["disabled by config (export.fp16=false)"]}
    record.bf16 = check_bf16(model, images, ref, min_half_agreement)
    record.save(Path(onnx_dir) / RECORD)
    return record
