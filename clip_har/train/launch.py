"""`python -m clip_har.train.launch …`: one training run as its own process.

Multi-process strategies (DDP, FSDP) re-execute the launching command in every rank, so the
pipeline starts training through this small entry point rather than from inside a flow.
Rank 0 writes the TrainResult as JSON to --result. Without --tracking-uri it trains with no
MLflow at all (nothing imports it), as on a GPU machine that lacks the MLOps stack. `argv()`
builds the command line the pipeline's train stage and `clip-har train` both use.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from clip_har.config import ConfigError, PipelineConfig, load_config
from clip_har.tracking import leaves
from clip_har.train.checkpoint import write_text_atomic
from clip_har.train.trainer import train


def argv(
    profile: str | None,
    overrides: Sequence[str],
    data_root: Path,
    out: Path,
    tracking_uri: str,
    base_weights: Path | None = None,
    data_version: str | None = None,
    resume: Path | None = None,
    result: Path | None = None,
    run_id: str | None = None,
) -> list[str]:
    """The launcher's arguments (what follows `python -m clip_har.train.launch`)."""
    args = ["--profile", profile] if profile else []
    args += [a for o in overrides for a in ("--set", o)]
    args += ["--data-root", str(data_root), "--out", str(out), "--tracking-uri", tracking_uri]
    flags = (("--base-weights", base_weights), ("--data-version", data_version), ("--resume", resume))
    for flag, value in (*flags, ("--run-id", run_id)):
        args += [flag, str(value)] if value else []
    return args + (["--result", str(result)] if result else [])


def command(args: list[str]) -> list[str]:
    """The launcher as a child process: every rank of a multi-process run re-executes this."""
    return [sys.executable, "-m", "clip_har.train.launch", *args]


def config_overrides(cfg: PipelineConfig) -> list[str]:
    """The full config as dotted overrides, so a child process rebuilds exactly this config."""
    tree = cfg.model_dump(mode="json", exclude={"profile"})
    return [f"{k}={json.dumps(v)}" for k, v in leaves(tree).items()]  # JSON is valid YAML for the parser


def main(args: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="clip_har.train.launch", description=__doc__)
    ap.add_argument("--profile", default=None, help="default: the `profile` setting")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--data-root", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--tracking-uri", default="", help="MLflow tracking URI; empty: no MLflow (CSV metrics in --out)")
    ap.add_argument("--base-weights", type=Path)
    ap.add_argument("--data-version", default="unversioned")
    ap.add_argument("--resume", type=Path)
    ap.add_argument("--result", type=Path)
    ap.add_argument("--run-id", help="log into this MLflow run instead of a new one")
    ns = ap.parse_args(args)
    try:
        cfg = load_config(ns.profile, ns.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = train(
        cfg,
        ns.data_root,
        ns.out,
        tracking_uri=ns.tracking_uri,
        base_weights=ns.base_weights,
        data_version=ns.data_version,
        resume=ns.resume,
        run_id=ns.run_id,
    )
    if result is not None and ns.result:  # atomically: its presence says training completed
        write_text_atomic(ns.result, json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
