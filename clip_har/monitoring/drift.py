"""Drift between the champion's reference window and a window of logged predictions, with
Evidently: embedding drift (classifier method, which measured correctly here — see STACK.md),
prediction drift and image-statistic drift. Too few predictions → "insufficient_data", no alarm.

An input shift (embeddings, brightness, contrast) raises the alarm only when a share of the
window lies outside the reference's support (new conditions). A reference that mixes
conditions — a champion retrained on day and night photos — differs from day-only traffic by
its mix alone; that traffic is still covered, and retraining would not help, so it is reported
but is no alarm. Prediction drift alarms on its own.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from clip_har.monitoring.novelty import STAT_COLUMNS, Novelty


@dataclass(frozen=True)
class DriftConfig:
    min_rows: int = 200  # fewer current predictions than this: no verdict
    embedding_threshold: float = 0.55  # ROC-AUC of a classifier telling current from reference
    prediction_threshold: float = 0.15  # Jensen-Shannon distance of predicted-label frequencies
    stat_threshold: float = 0.2  # normed Wasserstein distance of brightness / contrast
    max_reference: int = 5000  # sample caps keep one check within seconds
    max_current: int = 5000
    seed: int = 0
    # Small windows differ by chance: a distance counts as drift only above what shuffling the
    # pooled rows gives at this quantile (a 90-row reference vs 200 predictions gave a contrast
    # distance of 0.23 with no shift at all). Both windows above `noise_rows`: chance distances
    # are far below the thresholds, and the permutations are skipped.
    noise_quantile: float = 0.999
    n_permutations: int = 1000
    noise_rows: int = 1000
    # Share of the window outside the reference's support (embedding farther from every reference
    # embedding than 99% of reference rows are from their nearest neighbour, or brightness/contrast
    # beyond the reference's 0.5–99.5% range); ~3% by construction on the same distribution.
    novel_threshold: float = 0.10


@dataclass
class DriftResult:
    status: str  # ok | drift | insufficient_data
    n_current: int
    n_reference: int
    scores: dict[str, float] = field(default_factory=dict)
    drifted: dict[str, bool] = field(default_factory=dict)
    report_html: str | None = None
    thresholds: dict[str, float] = field(default_factory=dict)  # effective: max(config, noise floor)

    @property
    def is_drift(self) -> bool:
        return self.status == "drift"

    def to_dict(self) -> dict:
        return asdict(self)

    def to_markdown(self) -> str:
        lines = [f"### Drift check: **{self.status}** ({self.n_current} predictions vs {self.n_reference} reference)"]
        if self.scores:
            lines += ["", "| signal | score | threshold | drift |", "|---|---|---|---|"]
            for k, v in self.scores.items():
                limit = self.thresholds.get(k, float("nan"))
                lines.append(f"| {k} | {v:.4f} | {limit:.4f} | {'YES' if self.drifted.get(k) else 'no'} |")
        if self.report_html:
            lines += ["", f"Evidently report: `{self.report_html}`"]
        return "\n".join(lines)


def _js(a: np.ndarray, b: np.ndarray) -> float:
    """Jensen-Shannon distance of two label samples' frequencies (as Evidently computes it)."""
    from scipy.spatial.distance import jensenshannon

    cats = np.union1d(a, b)
    fa = np.array([(a == c).mean() for c in cats])
    fb = np.array([(b == c).mean() for c in cats])
    return float(jensenshannon(fa, fb))


def _wasserstein_normed_by(scale: float):
    """Evidently's normed Wasserstein distance, with the norm (the real reference's spread) fixed,
    so a shuffled pseudo-reference that happens to be nearly constant does not blow it up."""
    from scipy.stats import wasserstein_distance

    return lambda a, b: float(wasserstein_distance(a, b) / max(scale, 0.001))


def noise_floor(ref: np.ndarray, cur: np.ndarray, distance, cfg: DriftConfig) -> float:
    """The distance two samples of these sizes reach by chance: its `noise_quantile` over
    random splits of the pooled rows (a permutation null)."""
    if min(len(ref), len(cur)) >= cfg.noise_rows:
        return 0.0
    rng = np.random.default_rng(cfg.seed)
    pooled, n = np.concatenate([ref, cur]), len(ref)
    null = []
    for _ in range(cfg.n_permutations):
        perm = rng.permutation(pooled)
        null.append(distance(perm[:n], perm[n:]))
    return float(np.quantile(null, cfg.noise_quantile))


def auc_noise_floor(n_ref: int, n_cur: int, q: float) -> float:
    """The ROC AUC a classifier reaches by chance on the held-out half (Evidently's model method
    tests on 50%): the null AUC's normal approximation (Mann-Whitney variance) at quantile q."""
    from scipy.stats import norm

    n1, n2 = max(n_ref // 2, 1), max(n_cur // 2, 1)
    return 0.5 + float(norm.ppf(q)) * ((n1 + n2 + 1) / (12 * n1 * n2)) ** 0.5


def novel_fraction(ref: pd.DataFrame, cur: pd.DataFrame) -> float:
    """Share of current rows outside the reference's support (see `DriftConfig.novel_threshold`)."""

    def unit(df: pd.DataFrame) -> np.ndarray:
        e = np.stack(df["embedding"].to_numpy()).astype(np.float32)
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)

    r, c = unit(ref), unit(cur)
    self_sim = r @ r.T
    np.fill_diagonal(self_sim, -np.inf)  # leave-one-out: a row is not its own neighbour
    edge = np.quantile(self_sim.max(axis=1), 0.01)
    novel = (c @ r.T).max(axis=1) < edge
    bounds = Novelty.from_reference(ref).bounds
    for name, (lo, hi) in bounds.items():
        v = cur[name].to_numpy(float)
        novel |= (v < lo) | (v > hi)
    return float(novel.mean())


def _sample(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    return df.sample(n, random_state=seed) if len(df) > n else df


def _embedding_drift(ref: pd.DataFrame, cur: pd.DataFrame) -> float:
    """ROC AUC of Evidently's classifier telling current from reference embeddings; the verdict
    uses our own threshold (never below the chance level for these window sizes)."""
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import model

    ref_e = pd.DataFrame(np.stack(ref["embedding"].to_numpy()))
    cur_e = pd.DataFrame(np.stack(cur["embedding"].to_numpy()))
    score, _, _ = model()(cur_e, ref_e)
    return float(score)


def _value_drift(ref: pd.DataFrame, cur: pd.DataFrame, cfg: DriftConfig, html: Path | None):
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    cols = ["label", *STAT_COLUMNS]
    dd = DataDefinition(categorical_columns=["label"], numerical_columns=list(STAT_COLUMNS))
    # Fixed distance methods: Evidently's default switches to p-value tests below 1,000 rows,
    # which would flip the meaning of the scores and thresholds with the window size.
    metrics = [ValueDrift(column="label", method="jensenshannon", threshold=cfg.prediction_threshold)]
    metrics += [ValueDrift(column=c, method="wasserstein", threshold=cfg.stat_threshold) for c in STAT_COLUMNS]
    snapshot = Report(metrics).run(
        current_data=Dataset.from_pandas(cur[cols].reset_index(drop=True), data_definition=dd),
        reference_data=Dataset.from_pandas(ref[cols].reset_index(drop=True), data_definition=dd),
    )
    values = [float(m["value"]) for m in snapshot.dict()["metrics"]]
    if html is not None:
        snapshot.save_html(str(html))
    return dict(zip(["prediction", *STAT_COLUMNS], values, strict=True))


def check_drift(
    reference: pd.DataFrame, current: pd.DataFrame, cfg: DriftConfig | None = None, html: Path | None = None
) -> DriftResult:
    """Compare a window of logged predictions with the reference window."""
    cfg = cfg or DriftConfig()
    if len(current) < cfg.min_rows:
        return DriftResult("insufficient_data", len(current), len(reference))
    if len(reference) == 0:
        raise ValueError("the reference window is empty")
    ref = _sample(reference, cfg.max_reference, cfg.seed)
    cur = _sample(current, cfg.max_current, cfg.seed)
    emb_score = _embedding_drift(ref, cur)
    values = _value_drift(ref, cur, cfg, html)
    scores = {"embedding": emb_score, **values}
    thresholds = {"embedding": max(cfg.embedding_threshold, auc_noise_floor(len(ref), len(cur), cfg.noise_quantile))}
    thresholds["prediction"] = max(
        cfg.prediction_threshold, noise_floor(ref["label"].to_numpy(), cur["label"].to_numpy(), _js, cfg)
    )
    for c in STAT_COLUMNS:
        r = ref[c].to_numpy(float)
        floor = noise_floor(r, cur[c].to_numpy(float), _wasserstein_normed_by(float(np.std(r))), cfg)
        thresholds[c] = max(cfg.stat_threshold, floor)
    drifted = {k: v > thresholds[k] for k, v in scores.items()}
    scores["novel"], thresholds["novel"] = novel_fraction(ref, cur), cfg.novel_threshold
    drifted["novel"] = scores["novel"] > cfg.novel_threshold
    input_shift = any(drifted[k] for k in ("embedding", *STAT_COLUMNS))
    status = "drift" if drifted["prediction"] or (input_shift and drifted["novel"]) else "ok"
    result = DriftResult(status, len(current), len(reference), scores, drifted, str(html) if html else None, thresholds)
    if html is not None:  # the verdict (embedding included) next to Evidently's value-drift report
        Path(html).with_suffix(".json").write_text(json.dumps(result.to_dict(), indent=2))
    return result
