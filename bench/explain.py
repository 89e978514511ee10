"""Explanation time per image: in-process (clip_har.explain) and through `POST /explain` of the
real service, for the demo architecture (timm ResNet-10t, 64 px, Layer-CAM) and the tiny ViT
(32 px, gradient rollout); `--vit-b32` adds ViT-B-32 (224 px, random weights: the cost does not
depend on them).

Run: .venv/bin/python bench/explain.py [--images 32] [--vit-b32]
Writes bench/results/explain.json and prints a table.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

from bench.serving import free_port, start, stop  # noqa: E402 - after the path set-up above

MODELS = {"demo": ("model.preset=demo",), "tiny": ()}


def _scenes(n: int) -> list[bytes]:
    from clip_har.synth.scene import render_scene

    labels = ("texting", "calling", "drinking", "using_laptop", "cycling", "running")
    out = []
    for i in range(n):
        buf = io.BytesIO()
        render_scene(labels[i % len(labels)], np.random.default_rng([7, i]), 128).image.save(buf, format="JPEG")
        out.append(buf.getvalue())
    return out


def _stats(ms: list[float]) -> dict:
    return {
        "mean_ms": round(float(np.mean(ms)), 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
    }


def in_process(model_dir: Path, images: list[bytes]) -> dict:
    """The whole explanation (decode, map, overlay PNG) and the map alone, one image at a time."""
    from clip_har.explain import Explainer
    from clip_har.preprocess import load_image, to_pixels

    explainer = Explainer.from_dir(model_dir)
    for data in images[:3]:  # warm-up
        explainer.explain_bytes(data)
    whole, heat = [], []
    for data in images:
        t0 = time.perf_counter()
        explainer.explain_bytes(data)
        whole.append((time.perf_counter() - t0) * 1000)
        pixels = to_pixels(load_image(data), explainer.preprocess)
        t0 = time.perf_counter()
        explainer.explain_pixels(pixels)
        heat.append((time.perf_counter() - t0) * 1000)
    return {"method": explainer.method, "explain_bytes": _stats(whole), "map_only": _stats(heat)}


def over_http(onnx_dir: Path, images: list[bytes], work: Path, concurrency: int) -> dict:
    """POST /explain on a real `bentoml serve`: one caller (latency), then `concurrency` callers."""
    env = {**os.environ, "BENTOML_HOME": str(work / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    env |= {"CLIP_HAR_PREDICTION_LOG": "off", "CLIP_HAR_REVIEW_DIR": "off", "CLIP_HAR_HOME": str(work / "state")}
    weights = onnx_dir.with_name(onnx_dir.name + "-torch")
    code = (
        "from pathlib import Path; from deployments.bento_pack import save_to_store; "
        f"print(save_to_store(Path({str(onnx_dir)!r}), {{}}, model_dir=Path({str(weights)!r})))"
    )
    tag = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    port = free_port()
    cmd = [sys.executable, "-m", "bentoml", "serve", "service:ClipHar", "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    proc = start(cmd, {**env, "CLIP_HAR_MODEL": tag}, ROOT / "deployments", f"{url}/readyz", work / "serve.log")
    try:
        with httpx.Client(timeout=120) as client:

            def one(data: bytes) -> float:
                t0 = time.perf_counter()
                r = client.post(f"{url}/explain", files=[("image", ("a.jpg", data))])
                r.raise_for_status()
                return (time.perf_counter() - t0) * 1000

            for data in images[:3]:  # warm-up: the first request loads the PyTorch model
                one(data)
            sequential = [one(data) for data in images]
            t0 = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(one, images * 2))
            rps = 2 * len(images) / (time.perf_counter() - t0)
    finally:
        stop(proc)
    return {"one_caller": _stats(sequential), f"rps_{concurrency}_callers": round(rps, 1)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--vit-b32", action="store_true", help="also ViT-B-32 (in-process only: slow on a CPU)")
    args = ap.parse_args(argv)
    from clip_har.export.onnx_export import export_untrained

    images = _scenes(args.images)
    result: dict = {"images": args.images, "image_px": 128, "cpus": os.cpu_count(), "models": {}}
    models = dict(MODELS) | ({"ViT-B-32": ("model.preset=ViT-B-32",)} if args.vit_b32 else {})
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in models.items():
            work = Path(tmp) / name
            onnx = export_untrained(work / "onnx", 0, overrides=overrides)
            entry = {"in_process": in_process(onnx.with_name("onnx-torch"), images)}
            if name in MODELS:
                entry["http"] = over_http(onnx, images, work, args.concurrency)
            result["models"][name] = entry
    result["load_1min_at_end"] = round(os.getloadavg()[0], 2)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "explain.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'model':<10} {'method':<18} {'in-process p50':>15} {'map p50':>8} {'HTTP p50':>9} {'HTTP req/s':>10}")
    for name, r in result["models"].items():
        http = r.get("http", {})
        print(
            f"{name:<10} {r['in_process']['method']:<18} {r['in_process']['explain_bytes']['p50_ms']:>13} ms "
            f"{r['in_process']['map_only']['p50_ms']:>6} ms {http.get('one_caller', {}).get('p50_ms', '-'):>6} ms "
            f"{http.get(f'rps_{args.concurrency}_callers', '-'):>10}"
        )
    return result


if __name__ == "__main__":
    main()
