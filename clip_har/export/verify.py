"""Export checks: ONNX vs PyTorch parity on held-out images, the int8 variant's agreement and
speed, and single-image latency per backend. The results form the export record."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from clip_har.data.manifest import read_manifest
from clip_har.export.onnx_export import IMAGE_ONNX
from clip_har.models.artifact import load_model, read_meta
from clip_har.preprocess import preprocess

INT8_ONNX = "image.int8.onnx"


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
    latency: list[Latency]
    int8: dict[str, object] = field(default_factory=dict)  # agreement, speed-up, shipped, why
    tensorrt: dict[str, object] = field(default_factory=dict)

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
        )


def ort_session(path: Path, threads: int = 0, spin: bool = True):  # onnxruntime.InferenceSession
    """`spin=False` for servers: ORT's idle worker threads otherwise busy-wait between runs and
    take the CPU that request decoding and HTTP need in the other processes."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def held_out_batch(model_dir: Path, data_root: Path, split: str = "test", n: int = 64) -> np.ndarray:
    """Up to `n` preprocessed images of a split, with the model's own preprocessing."""
    pre = read_meta(model_dir).preprocess_config()  # metadata only: no weights to load
    df = read_manifest(data_root)
    paths = df.loc[df["split"] == split, "path"].tolist()[:n]
    if not paths:
        raise ValueError(f"no {split} images under {data_root} for the parity check")
    return np.stack([preprocess(Path(data_root) / p, pre) for p in paths])


def parity(model: torch.nn.Module, onnx_path: Path, images: np.ndarray) -> Parity:
    """ONNX vs the (already loaded) PyTorch classifier on the same images."""
    with torch.no_grad():
        ref = model(torch.from_numpy(images)).numpy()
    got = ort_session(onnx_path).run(["logits"], {"pixel_values": images})[0]
    return Parity(len(images), float(np.abs(got - ref).max()), float((got.argmax(1) == ref.argmax(1)).mean()))


def agreement(a_path: Path, b_path: Path, images: np.ndarray) -> float:
    a = ort_session(a_path).run(["logits"], {"pixel_values": images})[0]
    b = ort_session(b_path).run(["logits"], {"pixel_values": images})[0]
    return float((a.argmax(1) == b.argmax(1)).mean())


def quantize_int8(src: Path, dst: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    return dst


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


def verify_export(model_dir: Path, onnx_dir: Path, data_root: Path, min_int8_agreement: float = 0.99) -> ExportRecord:
    """Parity, latency for PyTorch / ORT fp32 / ORT int8, and whether int8 ships."""
    images = held_out_batch(model_dir, data_root)
    model = load_model(model_dir)[0].eval()
    fp32 = Path(onnx_dir) / IMAGE_ONNX
    record = ExportRecord(parity(model, fp32, images), [torch_latency(model, images[0])])
    record.latency.append(onnx_latency(fp32, images[0], "onnx"))
    int8 = quantize_int8(fp32, Path(onnx_dir) / INT8_ONNX)
    agree = agreement(fp32, int8, images)
    record.latency.append(onnx_latency(int8, images[0], "onnx-int8"))
    speedup = (record.p95("onnx") or 0) / max(record.p95("onnx-int8") or 1e-9, 1e-9)
    reasons = []
    if agree < min_int8_agreement:
        reasons.append(f"top-1 agreement {agree:.4f} < {min_int8_agreement}")
    if speedup <= 1.0:
        reasons.append(f"not faster than fp32 on this model (p95 speed-up {speedup:.2f}x)")
    record.int8 = {"agreement": agree, "p95_speedup": round(speedup, 3), "shipped": not reasons, "why_not": reasons}
    if not reasons:
        return record
    int8.unlink()  # never leave an artifact that must not ship
    return record
