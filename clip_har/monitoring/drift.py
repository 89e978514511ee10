"""Drift between the champion's reference window and a window of logged predictions, with
Evidently: embedding drift (classifier method, which measured correctly here — see STACK.md),
prediction drift and image-statistic drift. Too few predictions → "insufficient_data", no alarm.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

STAT_COLUMNS = ("brightness", "contrast")


@dataclass(frozen=True)
class DriftConfig:
    min_rows: int = 200  # fewer current predictions than this: no verdict
    embedding_threshold: float = 0.55  # ROC-AUC of a classifier telling current from reference
    prediction_threshold: float = 0.15  # Jensen-Shannon distance of predicted-label frequencies
    stat_threshold: float = 0.2  # normed Wasserstein distance of brightness / contrast
    max_reference: int = 5000  # sample caps keep one check within seconds
    max_current: int = 5000
    seed: int = 0


@dataclass
class DriftResult:
    status: str  # ok | drift | insufficient_data
    n_current: int
    n_reference: int
    scores: dict[str, float] = field(default_factory=dict)
    drifted: dict[str, bool] = field(default_factory=dict)
    report_html: str | None = None

    @property
    def is_drift(self) -> bool:
        return self.status == "drift"

    def to_dict(self) -> dict:
        return asdict(self)

    def to_markdown(self) -> str:
        lines = [f"### Drift check: **{self.status}** ({self.n_current} predictions vs {self.n_reference} reference)"]
        if self.scores:
            lines += ["", "| signal | score | drift |", "|---|---|---|"]
            lines += [f"| {k} | {v:.4f} | {'YES' if self.drifted.get(k) else 'no'} |" for k, v in self.scores.items()]
        if self.report_html:
            lines += ["", f"Evidently report: `{self.report_html}`"]
        return "\n".join(lines)


def _sample(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    return df.sample(n, random_state=seed) if len(df) > n else df


def _embedding_drift(ref: pd.DataFrame, cur: pd.DataFrame, threshold: float) -> tuple[float, bool]:
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import model

    ref_e = pd.DataFrame(np.stack(ref["embedding"].to_numpy()))
    cur_e = pd.DataFrame(np.stack(cur["embedding"].to_numpy()))
    score, drifted, _ = model(threshold=threshold)(cur_e, ref_e)
    return float(score), bool(drifted)


def _value_drift(ref: pd.DataFrame, cur: pd.DataFrame, cfg: DriftConfig, html: Path | None):  # noqa: ANN202
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
    emb_score, emb_drift = _embedding_drift(ref, cur, cfg.embedding_threshold)
    values = _value_drift(ref, cur, cfg, html)
    scores = {"embedding": emb_score, **values}
    drifted = {
        "embedding": emb_drift,
        "prediction": values["prediction"] > cfg.prediction_threshold,
        **{c: values[c] > cfg.stat_threshold for c in STAT_COLUMNS},
    }
    if html is not None:  # the embedding verdict next to Evidently's value-drift report
        Path(html).with_suffix(".json").write_text(json.dumps({"scores": scores, "drifted": drifted}, indent=2))
    status = "drift" if any(drifted.values()) else "ok"
    return DriftResult(status, len(current), len(reference), scores, drifted, str(html) if html else None)
