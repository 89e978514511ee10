"""Serving benchmark: the Bento service (ORT fp32 and int8) vs a naive PyTorch FastAPI app,
same model, same bounded loopback load; plus raw in-process ORT throughput at its best batch.

Run: .venv/bin/python bench/serving.py [--model demo|ViT-B-32] [--requests 300] [--concurrency 16]
Writes bench/results/serving[-<model>].json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
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

from clip_har.settings import load_settings  # noqa: E402 - after the path set-up above
from clip_har_cli.stack import wait_http  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict, cwd: Path, url: str, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    if wait_http(url, 180, alive=lambda: proc.poll() is None):
        return proc
    stop(proc)
    raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def load(url: str, images: list[bytes], requests: int, concurrency: int, max_s: float) -> dict:
    """Bounded closed-loop load: `requests` single-image POSTs by `concurrency` threads."""
    deadline = time.time() + max_s
    lat: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    client = httpx.Client(timeout=120, limits=limits)  # one pooled client, as a real load tool

    def one(i: int) -> None:
        if time.time() > deadline:
            return
        t0 = time.perf_counter()
        try:
            r = client.post(url, files=[("images", (f"{i}.jpg", images[i % len(images)]))])
            err = None if r.status_code == 200 else f"HTTP {r.status_code}: {r.text[:120]}"
        except httpx.HTTPError as exc:
            err = type(exc).__name__
        if err is None:
            lat.append((time.perf_counter() - t0) * 1000)
        else:
            errors.append(err)

    for i in range(min(4, requests)):  # warm-up
        one(i)
    lat.clear()
    errors.clear()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - t0
    client.close()
    return {
        "rps": round(len(lat) / wall, 2),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "ok": len(lat),
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
    }


def scene_jpegs(n: int = 16, size: int = 128) -> list[bytes]:
    """The request bodies of the serving benchmarks: synthetic `running` scenes as JPEG."""
    import io

    from clip_har.synth.scene import render_scene

    images = []
    for i in range(n):
        buf = io.BytesIO()
        render_scene("running", np.random.default_rng(i), size).image.save(buf, format="JPEG")
        images.append(buf.getvalue())
    return images


def raw_ort(onnx: Path, image_size: int, seconds: float = 5.0) -> tuple[float, int]:
    from clip_har.export.verify import ort_session

    sess = ort_session(onnx)
    best = (0.0, 1)
    for bs in (1, 8, 16, 32, 64):
        x = np.random.default_rng(0).standard_normal((bs, 3, image_size, image_size)).astype(np.float32)
        sess.run(None, {"pixel_values": x})
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 5:
            sess.run(None, {"pixel_values": x})
            n += bs
        ips = n / (time.perf_counter() - t0)
        best = max(best, (ips, bs))
    return round(best[0], 1), best[1]


def model_dir_for(name: str, work: Path) -> Path:
    """The demo champion's artifact, or a random-weight artifact of an open_clip preset."""
    if name == "demo":
        from clip_har.pipeline.rundir import MODEL
        from clip_har.registry import champion_version
        from clip_har.tracking import client

        state, name = load_settings().state, load_settings().model_name
        c = client(state.mlflow_uri)
        version = champion_version(c, name)
        if version is None:
            raise SystemExit("no demo champion: run `make demo` first")
        run = c.get_model_version(name, version).run_id
        return Path(c.download_artifacts(run, MODEL, str(work)))
    from clip_har.config import load_config
    from clip_har.models.artifact import ModelMeta, save_model
    from clip_har.models.factory import build_model
    from clip_har.preprocess import PreprocessConfig

    cfg = load_config("demo", [f"model.preset={name}"])
    bundle, clf = build_model(cfg)
    pre = PreprocessConfig(bundle.image_size, bundle.mean, bundle.std)
    meta = ModelMeta(name, list(cfg.data.classes), list(cfg.data.classes), list(cfg.model.templates), pre.to_dict())
    return save_model(clf, bundle, meta, work / "model")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="demo")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max-seconds", type=float, default=120)
    ap.add_argument("--log-overhead", action="store_true", help="also run fp32 with the prediction log off")
    args = ap.parse_args(argv)
    from clip_har.export.onnx_export import export_onnx
    from clip_har.export.verify import INT8_ONNX, quantize_int8
    from clip_har.models.artifact import read_meta

    keep = os.environ.get("BENCH_KEEP_LOGS")  # a directory to keep server logs in
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        model_dir = model_dir_for(args.model, work)
        onnx_dir = work / "onnx"
        export_onnx(model_dir, onnx_dir)
        quantize_int8(onnx_dir / "image.onnx", onnx_dir / INT8_ONNX)
        size = read_meta(model_dir).preprocess_config().image_size
        images = scene_jpegs()
        env = {
            **os.environ,
            "BENTOML_HOME": str(work / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "true",
            "CLIP_HAR_PREDICTION_LOG": str(work / "predictions"),
            "CLIP_HAR_HOME": str(work / "state"),  # the review queue and anything else stay in the work dir
        }
        code = (
            "from pathlib import Path; from deployments.bento_pack import save_to_store; "
            f"print(save_to_store(Path({str(onnx_dir)!r}), {{}}))"
        )
        tag = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()[-1]
        result: dict = {
            "model": args.model,
            "image_size": size,
            "concurrency": args.concurrency,
            "requests": args.requests,
            "http_workers": load_settings().http_workers,
            "cpus": os.cpu_count(),
        }
        runs = [("onnx", "onnx", {}), ("onnx-int8", "onnx-int8", {})]
        if args.log_overhead:
            runs.append(("onnx-nolog", "onnx", {"CLIP_HAR_PREDICTION_LOG": "off"}))
        for key, backend, extra in runs:
            port = free_port()
            proc = start(
                [
                    sys.executable,
                    "-m",
                    "bentoml",
                    "serve",
                    "service:ClipHar",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                {**env, "CLIP_HAR_MODEL": tag, "CLIP_HAR_BACKEND": backend, **extra},
                ROOT / "deployments",
                f"http://127.0.0.1:{port}/readyz",
                work / f"bento-{key}.log",
            )
            try:
                result[key] = load(
                    f"http://127.0.0.1:{port}/predict", images, args.requests, args.concurrency, args.max_seconds
                )
            finally:
                stop(proc)
        port = free_port()
        proc = start(
            [sys.executable, "-m", "uvicorn", "bench.naive_server:app", "--host", "127.0.0.1", "--port", str(port)],
            {**env, "BENCH_NAIVE_MODEL_DIR": str(model_dir)},
            ROOT,
            f"http://127.0.0.1:{port}/docs",
            work / "naive.log",
        )
        try:
            result["naive"] = load(
                f"http://127.0.0.1:{port}/predict", images, args.requests, args.concurrency, args.max_seconds
            )
        finally:
            stop(proc)
        result["raw_ort_ips"], result["raw_ort_best_batch"] = raw_ort(onnx_dir / "image.onnx", size)
        result["raw_ort_int8_ips"], _ = raw_ort(onnx_dir / INT8_ONNX, size)
    result |= {
        "bento_rps": result["onnx"]["rps"],
        "bento_p99_ms": result["onnx"]["p99_ms"],
        "bento_int8_rps": result["onnx-int8"]["rps"],
        "bento_int8_p99_ms": result["onnx-int8"]["p99_ms"],
        "naive_rps": result["naive"]["rps"],
        "naive_p99_ms": result["naive"]["p99_ms"],
    }
    result["bento_vs_naive_rps"] = round(result["bento_rps"] / max(result["naive_rps"], 1e-9), 2)
    result["bento_vs_raw_ort"] = round(result["bento_rps"] / max(result["raw_ort_ips"], 1e-9), 3)
    result["bento_int8_vs_naive_rps"] = round(result["bento_int8_rps"] / max(result["naive_rps"], 1e-9), 2)
    result["bento_int8_vs_raw_ort_int8"] = round(result["bento_int8_rps"] / max(result["raw_ort_int8_ips"], 1e-9), 3)
    if "onnx-nolog" in result:  # the prediction log's cost, as a share of throughput without it
        nolog = result["onnx-nolog"]["rps"]
        result["prediction_log_overhead"] = round(1 - result["bento_rps"] / max(nolog, 1e-9), 3)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "serving.json" if args.model == "demo" else f"serving-{args.model}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'server':<16} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for key in [k for k in ("onnx", "onnx-int8", "onnx-nolog", "naive") if k in result]:
        r = result[key]
        print(
            f"{'bento-' + key if key != 'naive' else 'naive':<16} "
            f"{r['rps']:>8} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['errors']:>7}"
        )
    print(
        f"raw ORT {result['raw_ort_ips']} img/s at batch {result['raw_ort_best_batch']} (int8 "
        f"{result['raw_ort_int8_ips']}); bento/naive {result['bento_vs_naive_rps']}x, bento/raw "
        f"{result['bento_vs_raw_ort']}; int8: {result['bento_int8_vs_naive_rps']}x naive, "
        f"{result['bento_int8_vs_raw_ort_int8']} of raw int8"
    )
    return result


if __name__ == "__main__":
    main()
