"""`python -m clip_har.train.launch …`: one training run as its own process.

Multi-process strategies (DDP, FSDP) re-execute the launching command in every rank, so the
pipeline starts training through this small entry point rather than from inside a flow.
Rank 0 writes the TrainResult as JSON to --result.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from clip_har.config import ConfigError, load_config
from clip_har.train.trainer import train


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="clip_har.train.launch", description=__doc__)
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--data-root", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--tracking-uri", required=True)
    ap.add_argument("--base-weights", type=Path)
    ap.add_argument("--data-version", default="unversioned")
    ap.add_argument("--resume", type=Path)
    ap.add_argument("--result", type=Path)
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.profile, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = train(
        cfg,
        args.data_root,
        args.out,
        tracking_uri=args.tracking_uri,
        base_weights=args.base_weights,
        data_version=args.data_version,
        resume=args.resume,
    )
    if result is not None and args.result:
        args.result.write_text(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
