"""What shadow scoring adds per request: the service on the demo champion, the same bounded
loopback load without a challenger and then with one scoring every request in shadow (a second
demo-architecture model: same input size, so the champion's pixels are reused).

Run: .venv/bin/python bench/shadow.py [--requests 400] [--concurrency 1 16]
Writes bench/results/shadow.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serving import RESULTS, free_port, load, model_dir_for, scene_jpegs, start, stop  # noqa: E402
from clip_har.settings import load_settings  # noqa: E402

TOKEN = "bench"


def _save(onnx_dir: Path, env: dict) -> str:
    code = (
        "from pathlib import Path; from deployments.bento_pack import save_to_store; "
        f"print(save_to_store(Path({str(onnx_dir)!r}), {{}}))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.split()[-1]


def _shadow_log(state: Path) -> list[dict]:
    return [
        json.loads(line)
        for p in (state / "rollout" / "shadow").glob("log-*.jsonl")
        for line in p.read_text().splitlines()
    ]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--max-seconds", type=float, default=120)
    args = ap.parse_args(argv)
    from clip_har.export.onnx_export import export_onnx, export_untrained

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        export_onnx(model_dir_for("demo", work), work / "onnx")
        challenger_onnx = export_untrained(work / "challenger", 7, profile="demo")
        state = work / "state"
        env = {
            **os.environ,
            "BENTOML_HOME": str(work / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "true",
            "CLIP_HAR_HOME": str(state),
            "CLIP_HAR_ADMIN_TOKEN": TOKEN,
        }
        champion, challenger = _save(work / "onnx", env), _save(challenger_onnx, env)
        images = scene_jpegs()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "bentoml", "serve", "service:ClipHar", "--host", "127.0.0.1", "--port", str(port)]
        result: dict = {"requests": args.requests, "http_workers": load_settings().http_workers, "cpus": os.cpu_count()}
        proc = start(cmd, {**env, "CLIP_HAR_MODEL": champion}, ROOT / "deployments", f"{url}/readyz", work / "s.log")
        try:
            # BentoML's batching dispatcher learns the model's latency from its first batches:
            # the first measured load would carry that tail, so a discarded load comes first
            load(f"{url}/predict", images, 200, max(args.concurrency), args.max_seconds)
            for c in args.concurrency:
                result[f"alone-c{c}"] = load(f"{url}/predict", images, args.requests, c, args.max_seconds)
            r = httpx.post(f"{url}/admin/shadow", json={"model": challenger}, headers={"X-Admin-Token": TOKEN})
            r.raise_for_status()
            time.sleep(1.5)  # the HTTP workers see the challenger within a second
            for c in args.concurrency:
                result[f"shadow-c{c}"] = load(f"{url}/predict", images, args.requests, c, args.max_seconds)
            time.sleep(2)  # the last shadow scorings finish
            result["shadow_status"] = httpx.get(f"{url}/shadow").json()
            scored = [r["shadow_ms"] for r in _shadow_log(state) if r.get("status") == "scored"]
            result["shadow_ms_p50"] = round(float(np.percentile(scored, 50)), 1) if scored else None
        finally:
            stop(proc)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "shadow.json").write_text(json.dumps(result, indent=2))
    print(f"{'load':<14}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for key, row in result.items():
        if isinstance(row, dict) and "rps" in row:
            print(f"{key:<14}{row['rps']:>8}{row['p50_ms']:>9}{row['p99_ms']:>9}{row['errors']:>8}")
    s = result["shadow_status"]
    print(
        f"shadow: {s['requests']} requests scored, {s['skipped']} skipped, {s['errors']} errors;"
        f" agreement {s['agreement']}; challenger's own scoring p50 {result['shadow_ms_p50']} ms"
    )
    return result


if __name__ == "__main__":
    main()
