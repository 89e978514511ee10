"""Service responsiveness under a heavy request: /readyz latency while one /predict_video of a
720p video (100 frames, all sampled) runs on the champion's service (`clip-har serve`).

Run: .venv/bin/python bench/responsiveness.py [--runs 3]   (needs a champion: `make demo`)
Writes bench/results/responsiveness.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

from clip_har_cli.stack import wait_http  # noqa: E402 - after the path set-up above


def write_video(path: Path, frames: int = 100, width: int = 1280, height: int = 720, fps: int = 10) -> Path:
    """Noise frames: the decoder cannot take shortcuts."""
    import av
    from PIL import Image

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(frames):
            img = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
            for packet in stream.encode(av.VideoFrame.from_image(img)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def one_run(url: str, video: bytes) -> dict:
    """Poll /readyz for as long as the heavy request runs."""
    done, answer, latencies = threading.Event(), {}, []

    def heavy() -> None:
        r = httpx.post(f"{url}/predict_video", files=[("video", ("v.mp4", video))], data={"fps": "10"}, timeout=300)
        answer["status"] = r.status_code
        done.set()

    t0 = time.perf_counter()
    thread = threading.Thread(target=heavy)
    thread.start()
    while not done.is_set():
        start = time.perf_counter()
        httpx.get(f"{url}/readyz", timeout=60)
        latencies.append(time.perf_counter() - start)
        time.sleep(0.05)
    thread.join()
    return {
        "video_status": answer["status"],
        "video_s": round(time.perf_counter() - t0, 2),
        "readyz_answers": len(latencies),
        "readyz_max_ms": round(max(latencies) * 1000, 1),
        "readyz_median_ms": round(statistics.median(latencies) * 1000, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--port", type=int, default=3977)
    args = ap.parse_args(argv)
    url = f"http://127.0.0.1:{args.port}"
    cli = str(Path(sys.executable).parent / "clip-har")
    env = {**os.environ, "CLIP_HAR_PORT": str(args.port)}
    with tempfile.TemporaryDirectory() as tmp:
        video = write_video(Path(tmp) / "v.mp4").read_bytes()
        proc = subprocess.Popen(
            [cli, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            if not wait_http(f"{url}/readyz", 180, alive=lambda: proc.poll() is None):
                raise SystemExit("the service did not start: is there a champion (`make demo`)?")
            runs = [one_run(url, video) for _ in range(args.runs)]
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
    result = {"video": "1280x720, 100 frames sampled at 10 fps", "runs": runs}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "responsiveness.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'run':<4} {'video s':>8} {'readyz n':>9} {'max ms':>8} {'median ms':>10}")
    for i, r in enumerate(runs):
        print(f"{i:<4} {r['video_s']:>8} {r['readyz_answers']:>9} {r['readyz_max_ms']:>8} {r['readyz_median_ms']:>10}")
    return result


if __name__ == "__main__":
    main()
