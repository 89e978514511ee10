"""Drift monitoring figures: check time for 5,000 × 512, and on the demo champion the false
alarms over 20 same-distribution windows and the detection delay of a night-style shift.

Run: .venv/bin/python bench/drift.py [--version N ...]  (needs a champion: `make demo`);
writes bench/results/drift.json.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"


def timing(n: int = 5000, dim: int = 512) -> dict:
    from clip_har.monitoring.drift import check_drift

    rng = np.random.default_rng(0)

    def frame(shift: float) -> pd.DataFrame:
        e = rng.standard_normal((n, dim))
        e[:, :8] += shift
        return pd.DataFrame(
            {
                "label": rng.choice([f"c{i}" for i in range(15)], n),
                "embedding": list(e),
                "brightness": rng.normal(120, 20, n),
                "contrast": rng.normal(50, 10, n),
            }
        )

    ref, cur = frame(0.0), frame(0.5)
    check_drift(ref.head(300), cur.head(300))  # imports and warm-up outside the timing
    t0 = time.perf_counter()
    result = check_drift(ref, cur)
    return {"rows": n, "dim": dim, "seconds": round(time.perf_counter() - t0, 2), "status": result.status}


def windows(style: str, seed: int, n: int, predictor) -> pd.DataFrame:
    from clip_har.classes import HAR_CLASSES
    from clip_har.monitoring.predlog import image_stats
    from clip_har.preprocess import to_array
    from clip_har.synth.generate import class_counts
    from clip_har.synth.scene import Shift, render_scene

    rows = []
    labels = [c for c, k in class_counts(n, HAR_CLASSES, ()).items() for _ in range(k)]
    rng = np.random.default_rng(seed)
    rng.shuffle(labels)
    images = [
        render_scene(lab, np.random.default_rng([seed, i]), 128, Shift(style=style)).image
        for i, lab in enumerate(labels)
    ]
    probs, emb = predictor.run(np.stack([to_array(im.convert("RGB"), predictor.preprocess) for im in images]))
    for im, p, e in zip(images, probs, emb, strict=True):
        rows.append({"label": predictor.classes[int(p.argmax())], "embedding": e, **image_stats(im)})
    return pd.DataFrame(rows)


def on_model(version: str | None = None) -> dict:
    """The champion (or registry `version`): day windows vs its reference, and a night shift."""
    from clip_har.data.versioning import dataset_dir
    from clip_har.monitoring.drift import check_drift
    from clip_har.monitoring.reference import REFERENCE
    from clip_har.pipeline.rundir import MODEL, ONNX
    from clip_har.registry import champion_onnx
    from clip_har.serving.predictor import Predictor
    from clip_har.settings import load_settings
    from clip_har.tracking import client

    state, name = load_settings().state, load_settings().model_name
    with tempfile.TemporaryDirectory() as tmp:
        if version is None:
            version, onnx_dir = champion_onnx(client(state.mlflow_uri), name, Path(tmp))
        else:
            run_id = client(state.mlflow_uri).get_model_version(name, version).run_id
            onnx_dir = Path(client(state.mlflow_uri).download_artifacts(run_id, ONNX, tmp))
        predictor = Predictor(onnx_dir)
        if not (onnx_dir / REFERENCE).is_file():  # champions exported before reference windows existed
            from clip_har.monitoring.reference import save_reference

            c = client(state.mlflow_uri)
            run = c.get_model_version(name, version).run_id
            model_dir = c.download_artifacts(run, MODEL, tmp)
            save_reference(Path(model_dir), dataset_dir(state.data_registry, "demo"), onnx_dir / REFERENCE)
        reference = pd.read_parquet(onnx_dir / REFERENCE)
        alarms = [check_drift(reference, windows("day", 5000 + k, 500, predictor)).status for k in range(20)]
        night = windows("night", 9000, 500, predictor)
        delay = None
        for n in (200, 300, 400, 500):
            if check_drift(reference, night.head(n)).is_drift:
                delay = n
                break
        scores = check_drift(reference, night).scores
    return {
        "model_version": version,
        "reference_rows": len(reference),
        "false_alarms_of_20": alarms.count("drift"),
        "night_detected_within": delay,
        "night_scores": {k: round(v, 4) for k, v in scores.items()},
    }


def main(argv: list[str] | None = None) -> dict:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--version", action="append", help="registry version(s) to measure; default the champion")
    args = parser.parse_args(argv)
    result = {"timing": timing(), "models": [on_model(v) for v in (args.version or [None])]}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "drift.json").write_text(json.dumps(result, indent=2) + "\n")
    t = result["timing"]
    print(f"check {t['rows']}x{t['dim']}: {t['seconds']} s")
    print("| model | reference rows | false alarms / 20 day windows | night detected within | night scores |")
    print("|---|---|---|---|---|")
    for m in result["models"]:
        print(
            f"| v{m['model_version']} | {m['reference_rows']} | {m['false_alarms_of_20']} | "
            f"{m['night_detected_within']} | {m['night_scores']} |"
        )
    return result


if __name__ == "__main__":
    main()
