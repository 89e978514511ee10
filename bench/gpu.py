"""GPU benchmark (issue 9), every figure from one run on one device:

- training: the project's loop (`clip_har.train.trainer.train`, cached data, the profile's
  precision) in img/s against the bare train step of the same model and batch, eager and
  `torch.compile`d with fused AdamW, and MFU from the step's counted FLOPs;
- inference: img/s at batch 64 and 256 and batch-1 latency for every serving backend that loads
  here, against raw in-process PyTorch bf16, and the best GPU backend against the CPU-only path;
- the service: req/s under concurrent load on the GPU backend against that backend's raw
  throughput (only where BentoML is installed: the device machine's stock image has none).

Run on a CUDA machine (../shared/gpu/README.md says how on the device tool):
    python3 bench/gpu.py [--preset ViT-B-32] [--batch 256] [--images 6144]
Writes bench/results/gpu.json and prints a table. Without CUDA it stops with one line (exit 2).
`--smoke --out F` runs every part on the CPU with the tiny preset and small sizes, to check the
script itself; its JSON says device cpu and goes only to F.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "gpu.json"
sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from clip_har.config import PipelineConfig

# Dense bf16 peak of the GPUs we may meet (vendor spec sheets; H100/H200: the SXM parts, PCIe ones peak
# lower); MFU is left out for others.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L40": 181.0, "L4": 121.0, "A10": 125.0}
NO_CUDA = "bench/gpu.py: no CUDA GPU here (torch.cuda.is_available() is False); run it on a GPU machine (../shared/gpu/README.md), or --smoke --out F to check the script on the CPU"  # noqa: E501


def device_info(device: str) -> dict:
    info: dict = {"device": device, "cpus": os.cpu_count(), "platform": platform.platform()}
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        info |= {"name": p.name, "memory_gb": round(p.total_memory / 2**30, 1), "capability": f"{p.major}.{p.minor}"}
    return info


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    for name in ("lightning", "open_clip", "onnx", "onnxruntime", "tensorrt"):
        try:
            out[name] = getattr(__import__(name), "__version__", "?")
        except ImportError:
            out[name] = None
    return out


def peak_tflops(name: str) -> float | None:
    # longest name first: "L4" must not match an "L40S"
    return next((PEAK_BF16_TFLOPS[k] for k in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True) if k in name), None)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def throughput(step: Callable[[], object], per_step: int, device: str, warmup: int, steps: int) -> float:
    """Items per second of `step` after `warmup` calls (compilation, allocator, autotuning)."""
    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return per_step * steps / (time.perf_counter() - t0)


def latency_ms(step: Callable[[], object], device: str, runs: int = 50, warmup: int = 10) -> dict:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(runs):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {"p50_ms": round(statistics.median(times), 2), "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2)}


# ---------------------------------------------------------------- training


class _Meter:
    """A Lightning callback: img/s of each epoch's training steps, from the start of its first
    batch to the end of its last (validation left out), synchronising the device only at those
    two points so the meter adds no stall per step. The first epoch pays for compilation, cuDNN
    autotuning and the cache's first touch; the caller drops it."""

    def __new__(cls, device: str):
        import lightning as L

        class Meter(L.Callback):
            def __init__(self) -> None:
                self.epochs: list[float] = []
                self._t0, self._n = 0.0, 0

            def on_train_batch_start(self, trainer, module, batch, i) -> None:
                if i == 0:
                    sync(device)
                    self._t0, self._n = time.perf_counter(), 0
                self._n += len(batch[1])

            def on_train_batch_end(self, trainer, module, outputs, batch, i) -> None:
                if i == trainer.num_training_batches - 1:
                    sync(device)
                    self.epochs.append(self._n / (time.perf_counter() - self._t0))

        return Meter()


def dataset(work: Path, images: int, size: int) -> Path:
    from clip_har.synth.generate import SynthSpec, synthesize

    return synthesize(work / "data", SynthSpec(n=images, seed=0, size=size))


def train_config(preset: str, batch: int, epochs: int, extra: list[str]) -> PipelineConfig:
    from clip_har.config import load_config

    sets = [f"model.preset={preset}", "train.mode=full", f"train.batch_size={batch}", f"train.max_epochs={epochs}"]
    sets += ["train.cache_images=true", "train.early_stopping_patience=100", "pretrain.enabled=false"]
    return load_config("tiny", sets + extra)


def project_loop(cfg: PipelineConfig, data: Path, work: Path, device: str) -> tuple[dict, str]:
    """The project's own training loop: img/s per timed epoch, and the model it wrote."""
    from clip_har.train.trainer import train

    meter = _Meter(device)
    t0 = time.perf_counter()
    result = train(cfg, data, work / "run", tracking_uri="", callbacks=[meter])
    assert result is not None
    epochs = [round(x, 1) for x in meter.epochs[1:]] or [round(x, 1) for x in meter.epochs]
    out = {"img_per_s": max(epochs), "epochs_img_per_s": epochs, "wall_s": round(time.perf_counter() - t0, 1)}
    return out | {"val_f1": round(result.best_val_f1, 4)}, result.model_dir


def bare_step(cfg: PipelineConfig, device: str, compiled: bool, steps: int) -> dict:
    """The same model and batch as the loop, data already on the device: the ceiling."""
    import torch.nn.functional as F

    from clip_har.models.factory import build_model
    from clip_har.train.trainer import resolve_precision

    _, model = build_model(cfg)
    model = model.to(device).train()
    b, classes = cfg.train.batch_size, len(cfg.data.classes)
    size = model.visual.image_size
    size = size[0] if isinstance(size, tuple | list) else int(size)
    x = torch.randn(b, 3, size, size, device=device)
    y = torch.randint(0, classes, (b,), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
    cuda = device == "cuda"
    native_bf16 = cuda and torch.cuda.is_bf16_supported(including_emulation=False)
    bf16 = resolve_precision(cfg.train, cuda, native_bf16) == "bf16-mixed"
    fwd = torch.compile(model) if compiled else model

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(fwd(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    ips = throughput(step, b, device, warmup=5 if compiled else 3, steps=steps)
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        F.cross_entropy(model(x), y).backward()
    opt.zero_grad(set_to_none=True)
    flops_per_img = counter.get_total_flops() / b
    return {
        "img_per_s": round(ips, 1),
        "gflop_per_img": round(flops_per_img / 1e9, 2),
        "tflops": ips * flops_per_img / 1e12,
    }


def training(args: argparse.Namespace, work: Path, device: str, peak: float | None) -> tuple[dict, str, PipelineConfig]:
    from clip_har.models.presets import build_clip

    size = build_clip(args.preset).image_size
    data = dataset(work, args.images, size)
    cfg = train_config(args.preset, args.batch, args.epochs, [f"train.compile={str(args.compile).lower()}"])
    loop, model_dir = project_loop(cfg, data, work, device)
    eager = bare_step(cfg, device, compiled=False, steps=args.steps)
    compiled = bare_step(cfg, device, compiled=True, steps=args.steps) if device == "cuda" else None
    ceiling = compiled or eager
    out = {"preset": args.preset, "batch": args.batch, "images": args.images, "loop": loop, "bare_eager": eager}
    out |= {"bare_compiled": compiled, "loop_vs_bare_compiled": round(loop["img_per_s"] / ceiling["img_per_s"], 3)}
    # without --compile the loop runs eager: its own ceiling is the eager step
    out["loop_vs_bare_eager"] = round(loop["img_per_s"] / eager["img_per_s"], 3)
    for part in (loop, eager, compiled):
        if part is not None:
            tflops = part["img_per_s"] * eager["gflop_per_img"] / 1e3
            part["mfu"] = round(tflops / peak, 3) if peak else None
    for part in (eager, compiled):
        if part is not None:
            part["tflops"] = round(part["tflops"], 1)
    return out, model_dir, cfg


# ---------------------------------------------------------------- inference


def _pixels(n: int, size: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


def backend_figures(onnx_dir: Path, backend: str, size: int, device: str, batches: tuple[int, ...]) -> dict:
    from clip_har.serving.predictor import Predictor

    try:
        predictor = Predictor(onnx_dir, backend)
        predictor.run(_pixels(1, size))
    except Exception as exc:
        return {"unavailable": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
    out: dict = {"on_gpu": predictor.on_gpu}
    for b in batches:
        x = _pixels(b, size)
        out[f"img_per_s_b{b}"] = round(throughput(lambda x=x: predictor.run(x), b, "cpu", warmup=3, steps=10), 1)
    one = _pixels(1, size)
    out["batch1"] = latency_ms(lambda: predictor.run(one), "cpu", runs=30, warmup=5)
    return out


def raw_torch(model_dir: str, device: str, batches: tuple[int, ...]) -> dict:
    """In-process PyTorch, bf16 weights on the GPU (fp32 on the CPU): the reference."""
    from clip_har.models.artifact import load_model

    model, bundle, _ = load_model(Path(model_dir))
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = model.to(device=device, dtype=dtype).eval()
    out: dict = {"dtype": str(dtype).removeprefix("torch.")}
    for b in batches:
        x = torch.randn(b, 3, bundle.image_size, bundle.image_size, device=device, dtype=dtype)
        with torch.inference_mode():
            out[f"img_per_s_b{b}"] = round(throughput(lambda x=x: model(x), b, device, warmup=5, steps=20), 1)
    x1 = torch.randn(1, 3, bundle.image_size, bundle.image_size, device=device, dtype=dtype)
    with torch.inference_mode():
        out["batch1"] = latency_ms(lambda: model(x1), device)
    return out


def inference(cfg: PipelineConfig, model_dir: str, work: Path, device: str, data: Path) -> dict:
    from types import SimpleNamespace

    from clip_har.export.verify import ExportRecord
    from clip_har.models.artifact import read_meta
    from clip_har.pipeline import export
    from clip_har.pipeline.rundir import RunDir
    from clip_har.serving.predictor import ARTIFACTS, TORCH_DIR, Predictor

    # The pipeline's own export stage: ONNX, its checks, fp16/int8/bf16 variants, a TensorRT engine
    # where TensorRT imports; `train` wrote the model into the same run dir.
    summary = export.run(cfg, SimpleNamespace(root=str(data)), RunDir(Path(model_dir).parent))  # type: ignore[arg-type]
    onnx_dir, record = Path(summary.onnx_dir), ExportRecord.load(Path(summary.record))
    shutil.copytree(model_dir, onnx_dir / TORCH_DIR)  # the `pytorch` backend's weights, as the Bento stores them
    size = read_meta(Path(model_dir)).preprocess_config().image_size
    batches = (64, 256)
    backends = {b: backend_figures(onnx_dir, b, size, device, batches) for b in ARTIFACTS}
    auto = Predictor(onnx_dir, "auto")
    out = {"export_record": record.to_dict(), "backends": backends, "raw_torch": raw_torch(model_dir, device, batches)}
    out["auto"] = {"backend": auto.backend, "why": auto.why}
    out["onnx_dir"] = str(onnx_dir)
    cpu = backends.get("onnx", {}).get("img_per_s_b64")
    gpu = {k: v for k, v in backends.items() if "img_per_s_b64" in v and v["on_gpu"]}
    if cpu and gpu:
        best = max(gpu, key=lambda k: gpu[k]["img_per_s_b64"])
        out["best_gpu_backend"] = best
        out["best_gpu_vs_cpu_b64"] = round(gpu[best]["img_per_s_b64"] / cpu, 2)
    return out


# ---------------------------------------------------------------- the service


def service(
    onnx_dir: Path, model_dir: str, work: Path, backend: str, raw_ips: float, concurrency: int, requests: int
) -> dict:
    """The Bento service on `backend` under a bounded loopback load (bench/serving.py's)."""
    missing = [m for m in ("bentoml", "httpx") if importlib.util.find_spec(m) is None]
    if missing:
        return {"skipped": f"{', '.join(missing)} not installed here (the device machine's stock image)"}
    import subprocess

    from bench.serving import free_port, load, scene_jpegs, start, stop

    env = {**os.environ, "BENTOML_HOME": str(work / "bentoml"), "CLIP_HAR_HOME": str(work / "state")}
    env["CLIP_HAR_PREDICTION_LOG"] = "off"  # the figure is the model path, not the log writer
    code = f"from pathlib import Path; from deployments.bento_pack import save_to_store; print(save_to_store(Path({str(onnx_dir)!r}), {{}}, model_dir=Path({model_dir!r})))"  # noqa: E501
    tag = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    images = scene_jpegs(size=256)
    port = free_port()
    cmd = [sys.executable, "-m", "bentoml", "serve", "service:ClipHar", "--host", "127.0.0.1", "--port", str(port)]
    env |= {"CLIP_HAR_MODEL": tag, "CLIP_HAR_BACKEND": backend}
    proc = start(cmd, env, ROOT / "deployments", f"http://127.0.0.1:{port}/readyz", work / "bento.log")
    try:
        figures = load(f"http://127.0.0.1:{port}/predict", images, requests, concurrency, 300)
    finally:
        stop(proc)
    vs_raw = round(figures["rps"] / raw_ips, 3) if raw_ips else None
    return figures | {"backend": backend, "raw_img_per_s": raw_ips, "vs_raw": vs_raw}


# ---------------------------------------------------------------- report


def table(result: dict) -> str:
    t, inf = result["training"], result["inference"]
    rows = [
        ("train: project loop img/s", t["loop"]["img_per_s"]),
        ("train: bare eager step img/s", t["bare_eager"]["img_per_s"]),
        ("train: bare compiled step img/s", (t["bare_compiled"] or {}).get("img_per_s")),
        ("train: loop / bare compiled (target >= 0.80)", t["loop_vs_bare_compiled"]),
        ("train: loop / bare eager", t["loop_vs_bare_eager"]),
        ("train: loop MFU", t["loop"].get("mfu")),
    ]
    for name, fig in inf["backends"].items():
        rows.append((f"infer {name}: img/s b64 / b256 / b1 p50 ms", _backend_cell(fig)))
    raw = inf["raw_torch"]
    rows.append(("infer raw torch: img/s b64 / b256 / b1 p50 ms", _backend_cell(raw)))
    rows.append(("best GPU backend / CPU onnx at b64 (target >= 5)", inf.get("best_gpu_vs_cpu_b64")))
    svc = result["service"]
    rows.append(("service req/s / raw backend (target >= 0.70)", svc.get("vs_raw", svc.get("skipped"))))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _backend_cell(fig: dict) -> str:
    if "unavailable" in fig:
        return f"unavailable ({fig['unavailable'][:80]})"
    return f"{fig.get('img_per_s_b64')} / {fig.get('img_per_s_b256')} / {fig['batch1']['p50_ms']}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="ViT-B-32")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--images", type=int, default=6144, help="synthetic training images (all splits)")
    ap.add_argument("--epochs", type=int, default=3, help="the first is warm-up")
    ap.add_argument("--steps", type=int, default=20, help="timed steps of the bare train step")
    ap.add_argument("--compile", action="store_true", help="train.compile=true for the project loop")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--no-service", action="store_true", help="leave the service out")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny preset, small sizes: checks the script only")
    ap.add_argument("--out", type=Path, default=None, help="where the JSON goes (required with --smoke)")
    args = ap.parse_args(argv)
    if args.smoke:
        if args.out is None or args.out.resolve() == RESULTS:
            ap.error("--smoke needs --out, away from bench/results/gpu.json (its figures are not GPU figures)")
        args.preset, args.batch, args.images, args.epochs, args.steps = "tiny", 16, 150, 2, 2
        args.requests, args.concurrency = 20, 4
    elif not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    device = "cpu" if args.smoke else "cuda"
    info = device_info(device)
    result: dict = {"device": info, "versions": versions(), "args": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory(prefix="clip-har-gpu-bench-") as tmp:
        work = Path(tmp)
        result["training"], model_dir, cfg = training(args, work, device, peak_tflops(info.get("name", "")))
        result["inference"] = inference(cfg, model_dir, work, device, work / "data")
        best = result["inference"].get("best_gpu_backend") or "onnx"
        raw = result["inference"]["backends"][best].get("img_per_s_b64", 0.0)
        onnx_dir = Path(result["inference"]["onnx_dir"])
        if args.no_service:
            result["service"] = {"skipped": "--no-service"}
        else:
            result["service"] = service(onnx_dir, model_dir, work, best, raw, args.concurrency, args.requests)
    out = args.out or RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(table(result))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
