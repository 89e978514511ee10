"""Drift checks on controlled windows: same distribution → ok, shifted → drift, few → no verdict."""

from pathlib import Path

import numpy as np
import pandas as pd

from clip_har.monitoring.drift import DriftConfig, check_drift

CLASSES = ["running", "texting", "sitting"]


def window(n: int, seed: int, shift: float = 0.0, dark: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, 32))
    emb[:, :4] += shift
    return pd.DataFrame(
        {
            "label": rng.choice(CLASSES, n),
            "embedding": list(emb / np.linalg.norm(emb, axis=1, keepdims=True)),
            "brightness": rng.normal(130 - dark, 15, n),
            "contrast": rng.normal(50, 8, n),
        }
    )


def test_twenty_same_distribution_windows_raise_no_alarm() -> None:
    ref = window(1500, 0)
    results = [check_drift(ref, window(300, seed)) for seed in range(1, 21)]
    assert [r.status for r in results] == ["ok"] * 20, [r.scores for r in results if r.is_drift]


def test_shifted_window_is_drift_with_scores(tmp_path: Path) -> None:
    r = check_drift(window(1500, 0), window(300, 9, shift=1.0, dark=80), html=tmp_path / "report.html")
    assert r.status == "drift" and r.drifted["embedding"] and r.drifted["brightness"]
    assert r.scores["embedding"] > 0.55 and Path(r.report_html).is_file()
    assert (tmp_path / "report.json").is_file() and "YES" in r.to_markdown()


def test_small_reference_windows_do_not_alarm_on_chance_differences() -> None:
    """90 reference rows vs 200 predictions from the same distribution: fixed thresholds alone
    flag chance distances (seen with the tiny model); the permutation noise floor does not."""
    results = [check_drift(window(90, 100 + seed), window(200, seed)) for seed in range(10)]
    assert [r.status for r in results] == ["ok"] * 10, [r.scores for r in results if r.is_drift]
    assert all(r.thresholds["contrast"] > DriftConfig().stat_threshold for r in results[:1])
    shifted = check_drift(window(90, 100), window(200, 1, dark=80))  # a real shift still shows
    assert shifted.status == "drift" and shifted.drifted["brightness"]


def test_traffic_covered_by_a_mixed_reference_is_no_alarm() -> None:
    """A champion retrained on day and night photos: day-only traffic differs from the reference
    by its mix alone (Evidently flags it) but lies inside its support, so no retraining alarm;
    traffic from unseen conditions still alarms."""
    reference = pd.concat([window(1200, 0), window(300, 50, shift=2.0, dark=80)], ignore_index=True)
    day_only = check_drift(reference, window(300, 1))
    assert day_only.drifted["brightness"] and not day_only.drifted["novel"] and day_only.status == "ok"
    unseen = check_drift(reference, window(300, 2, dark=-90))  # brighter than anything in the reference
    assert unseen.drifted["novel"] and unseen.status == "drift"


def test_too_few_predictions_is_insufficient_data() -> None:
    r = check_drift(window(500, 0), window(50, 1, shift=3.0), DriftConfig(min_rows=200))
    assert r.status == "insufficient_data" and not r.is_drift and r.scores == {}
