"""Distributed batch inference: throughput of one process vs a Dask cluster of 1 and 2 workers.

Same model (the demo architecture, 64 px), same synthetic images, same rows (checked). Each
Dask worker is one process with one thread and ONNX Runtime on one thread, so the workers are
the unit of scale; the in-process figures are given with one thread and with ORT's default.

Run: .venv/bin/python bench/batch_dask.py [--images 600] [--chunk 64] [--size 512]
Writes bench/results/batch_dask.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

from bench.serving import free_port  # noqa: E402 - after the path set-up above
from clip_har.export.onnx_export import export_untrained  # noqa: E402
from clip_har.serving.batch import CPU_BATCH, TOP_K, VIDEO_FPS, collect, predict_files  # noqa: E402
from clip_har.serving.distributed import predict_distributed  # noqa: E402
from clip_har.serving.predictor import Predictor  # noqa: E402
from clip_har.synth.generate import SynthSpec, synthesize  # noqa: E402


def start_cluster(workers: int, logs: Path) -> tuple[str, list[subprocess.Popen]]:
    """A scheduler and `workers` one-thread worker processes on loopback."""
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmds = [[sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port)]]
    cmds += [
        [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--host", "127.0.0.1"]
        for _ in range(workers)
    ]
    procs = []
    for i, cmd in enumerate(cmds):
        log = (logs / f"dask-{workers}-{i}.log").open("w")
        procs.append(subprocess.Popen([*cmd, "--no-dashboard"], env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=120)
    except Exception:
        stop(procs)
        raise
    return address, procs


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):  # workers before the scheduler
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def timed(fn) -> tuple[float, list]:
    t0 = time.perf_counter()
    rows = fn()
    return time.perf_counter() - t0, rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--chunk", type=int, default=64, help="files per Dask task")
    # photo-sized inputs: decoding is most of the work per image, as with real photos
    ap.add_argument("--size", type=int, default=512, help="stored image side in pixels")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-dask-") as tmp_name:
        tmp = Path(tmp_name)
        data = synthesize(tmp / "data", SynthSpec(n=args.images, seed=1, size=args.size))
        files = collect([data / "images"])
        onnx = export_untrained(tmp / "onnx", 0, overrides=("model.preset=demo",))
        runs: dict[str, dict] = {}

        def record(name: str, seconds: float, rows: list, reference: list | None) -> None:
            same = reference is None or [(r.path, r.label) for r in rows] == [(r.path, r.label) for r in reference]
            runs[name] = {"seconds": round(seconds, 2), "img_per_s": round(len(files) / seconds, 1), "same_rows": same}

        # in-process: warm the model first, as the Dask workers are warmed by their first chunk
        reference: list | None = None
        for name, threads in (("1 process, 1 thread", 1), ("1 process, ORT default threads", 0)):
            predictor = Predictor(onnx, threads=threads)
            predict_files(predictor, files[:CPU_BATCH], CPU_BATCH, TOP_K, VIDEO_FPS)
            seconds, rows = timed(lambda p=predictor: predict_files(p, files, CPU_BATCH, TOP_K, VIDEO_FPS))
            record(name, seconds, rows, reference)
            reference = reference or rows
        for workers in (1, 2):
            address, procs = start_cluster(workers, tmp)
            try:

                def run(a: str = address) -> list:
                    return predict_distributed(a, onnx, files, CPU_BATCH, TOP_K, VIDEO_FPS, args.chunk, threads=1)

                run()  # the first run loads the model on every worker that takes a chunk
                seconds, rows = timed(run)
                record(f"Dask, {workers} worker{'s' * (workers > 1)} × 1 thread", seconds, rows, reference)
            finally:
                stop(procs)
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "model": "demo architecture (64 px), untrained weights",
        "images": len(files),
        "image_size": args.size,
        "load_1min_at_end": round(os.getloadavg()[0], 2),
        "chunk_files": args.chunk,
        "batch_size": CPU_BATCH,
        "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "batch_dask.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'run':<34} {'seconds':>8} {'img/s':>8} {'same rows':>10}")
    for name, r in runs.items():
        print(f"{name:<34} {r['seconds']:>8} {r['img_per_s']:>8} {r['same_rows']!s:>10}")
    return result


if __name__ == "__main__":
    main()
