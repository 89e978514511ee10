"""Synthetic world throughput: images/s for a 3,000-image demo dataset.

Run: .venv/bin/python bench/synth.py [--n 3000]; writes bench/results/synth.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from clip_har.synth.generate import SynthSpec, synthesize

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        synthesize(Path(tmp) / "d", SynthSpec(n=args.n, seed=0, size=args.size))
        seconds = time.perf_counter() - t0
    result = {
        "images": args.n,
        "size": args.size,
        "seconds": round(seconds, 2),
        "images_per_s": round(args.n / seconds, 1),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "synth.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'images':>8} {'size':>5} {'seconds':>8} {'img/s':>8}")
    print(f"{result['images']:>8} {result['size']:>5} {result['seconds']:>8} {result['images_per_s']:>8}")
    return result


if __name__ == "__main__":
    main()
