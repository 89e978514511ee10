"""What counts as new conditions for a model: image statistics outside the central range of its
reference window. The review queue keeps such images; the drift check counts them."""

from __future__ import annotations

import pandas as pd

STAT_COLUMNS = ("brightness", "contrast")  # the image statistics the drift check compares too


class Novelty:
    """Image statistics outside the central range of the reference window's (the validation
    images the model was checked on): a cheap signal that an image comes from new conditions."""

    def __init__(self, bounds: dict[str, tuple[float, float]]) -> None:
        self.bounds = bounds

    @classmethod
    def from_reference(cls, reference: pd.DataFrame, tail: float = 0.005) -> Novelty:
        cols = [c for c in STAT_COLUMNS if c in reference.columns]
        return cls({c: (float(reference[c].quantile(tail)), float(reference[c].quantile(1 - tail))) for c in cols})

    def reason(self, stats: dict[str, float]) -> str | None:
        """Why the image is novel, or None."""
        for name, (lo, hi) in self.bounds.items():
            v = stats.get(name)
            if v is not None and not lo <= v <= hi:
                return f"novel: {name} {v:.1f} outside [{lo:.1f}, {hi:.1f}]"
        return None
