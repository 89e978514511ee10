"""The data gate: a Great Expectations suite (expectations/manifest.json) over the manifest
plus per-row file checks, with a report that names the failing rows and expectations.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from clip_har.config import DataConfig
from clip_har.data.manifest import read_manifest, sha256_file
from clip_har.preprocess import load_image

SUITE_PATH = Path(__file__).resolve().parents[2] / "expectations" / "manifest.json"
MAX_ROWS_SHOWN = 10


class DataValidationError(ValueError):
    """The data gate failed; `report` says which rows broke which expectation."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(report.to_text())
        self.report = report


@dataclass
class Failure:
    expectation: str
    column: str | None
    why: str
    unexpected: int
    rows: list[dict[str, object]] = field(default_factory=list)  # first few offenders: row, path, value


@dataclass
class ValidationReport:
    data_root: str
    rows: int
    evaluated: int
    failures: list[Failure]

    @property
    def success(self) -> bool:
        return not self.failures

    def to_text(self) -> str:
        if self.success:
            return f"data gate passed: {self.evaluated} expectations over {self.rows} rows of {self.data_root}"
        lines = [f"data gate FAILED for {self.data_root}: {len(self.failures)} of {self.evaluated} expectations"]
        for f in self.failures:
            where = f" on {f.column}" if f.column else ""
            lines.append(f"- {f.expectation}{where}: {f.unexpected} unexpected ({f.why})")
            for r in f.rows:
                origin = f" (from {r['source']})" if r.get("source") else ""
                lines.append(f"    row {r['row']} {r.get('path', '')!s}{origin}: {r.get('value')!s}")
        return "\n".join(lines)

    def save(self, path: Path) -> Path:
        Path(path).write_text(json.dumps({**asdict(self), "success": self.success}, indent=2, default=str))
        return Path(path)


def _inside(root: Path, rel: object) -> bool:
    if not isinstance(rel, str) or not rel or os.path.isabs(rel):
        return False
    return (root / rel).resolve().is_relative_to(root)


def _decodes(path: Path) -> bool:
    try:
        load_image(path)
    except ValueError:
        return False
    return True


def file_checks(df: pd.DataFrame, root: Path) -> pd.DataFrame:
    """Add the per-row columns the suite checks: file_exists, decodes, inside_root, sha256_matches,
    label_count, train_test_leak. Files outside the root are never opened."""
    root = Path(root).resolve()
    out = df.copy()
    paths = out["path"] if "path" in out else pd.Series([None] * len(out))
    inside = [_inside(root, p) for p in paths]
    exists = [ok and (root / p).is_file() for ok, p in zip(inside, paths, strict=True)]
    out["inside_root"] = inside
    out["file_exists"] = exists
    out["decodes"] = [ok and _decodes(root / p) for ok, p in zip(exists, paths, strict=True)]
    given = out["sha256"] if "sha256" in out else pd.Series([None] * len(out))
    out["sha256_matches"] = [ok and sha256_file(root / p) == h for ok, p, h in zip(exists, paths, given, strict=True)]
    if "label" in out:
        out["label_count"] = out.groupby("label", dropna=False)["label"].transform("size").fillna(0).astype(int)
    if "sha256" in out and "split" in out:
        train = set(out.loc[out["split"] == "train", "sha256"])
        test = set(out.loc[out["split"] == "test", "sha256"])
        out["train_test_leak"] = out["sha256"].isin(train & test)
    return out


def load_suite(path: Path = SUITE_PATH):  # a gx.ExpectationSuite
    import great_expectations as gx

    raw = json.loads(Path(path).read_text())
    return gx.ExpectationSuite(name=raw["name"], expectations=raw["expectations"], meta=raw.get("meta", {}))


def _run_suite(df: pd.DataFrame, params: dict[str, object], suite_path: Path):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = ctx.data_sources.add_pandas("manifest").add_dataframe_asset("rows")
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": df})
    suite = ctx.suites.add(load_suite(suite_path))
    return batch.validate(suite, expectation_parameters=params, result_format="COMPLETE")


def validate_data(root: Path, data: DataConfig, suite_path: Path = SUITE_PATH) -> ValidationReport:
    """Run the gate over the data root with the profile's classes and thresholds; never raises
    for bad data (see `require_valid`)."""
    root = Path(root)
    if not root.is_dir():
        fail = Failure("data_root_exists", None, "the data directory is missing", 1, [{"row": "-", "path": str(root)}])
        return ValidationReport(str(root), 0, 1, [fail])
    try:
        df = read_manifest(root)
    except (FileNotFoundError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        return ValidationReport(str(root), 0, 1, [Failure("manifest_readable", None, str(exc), 1)])
    checked = file_checks(df, root)
    params = {
        "classes": list(data.classes),
        "min_per_class": data.min_per_class,
        "min_side": data.min_side,
        "max_side": data.max_side,
    }
    result = _run_suite(checked, params, suite_path)
    failures = []
    for r in result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        column = cfg.kwargs.get("column")
        index = (r.result or {}).get("unexpected_index_list") or []
        values = (r.result or {}).get("unexpected_list") or []
        exc = r.exception_info.get("exception_message") if r.exception_info else None
        rows = [_row(checked, int(i), v) for i, v in list(zip(index, values, strict=False))[:MAX_ROWS_SHOWN]]
        if not rows and "distinct_values_to_contain_set" in cfg.type:  # name what is absent
            wanted = cfg.kwargs.get("value_set")
            if isinstance(wanted, dict) and "$PARAMETER" in wanted:
                wanted = params[wanted["$PARAMETER"]]
            observed = set((r.result or {}).get("observed_value") or [])
            rows = [{"row": "-", "value": f"absent: {v}"} for v in sorted(set(wanted or []) - observed)][
                :MAX_ROWS_SHOWN
            ]
        count = (r.result or {}).get("unexpected_count") or len(values) or 1
        why = (cfg.meta or {}).get("why", "") + (f" [{exc}]" if exc else "")
        failures.append(Failure(cfg.type, column, why, int(count), rows))
    return ValidationReport(str(root), len(df), len(result.results), failures)


def _row(df: pd.DataFrame, i: int, value: object) -> dict[str, object]:
    """One offending row: its manifest path and, for ingested files, where it came from."""
    row: dict[str, object] = {"row": i, "path": df["path"].iloc[i] if "path" in df else "", "value": value}
    source = df["source"].iloc[i] if "source" in df else None
    if isinstance(source, str) and ":" in source and not source.startswith("synth:"):
        row["source"] = source.split(":", 1)[1]
    return row


def require_valid(report: ValidationReport) -> ValidationReport:
    if not report.success:
        raise DataValidationError(report)
    return report


__all__ = ["DataValidationError", "ValidationReport", "require_valid", "validate_data"]
