"""Each data-gate failure is caught and names the offending row or expectation."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from clip_har.config import DataConfig
from clip_har.data.validate import validate_data

Breaker = Callable[[Path, pd.DataFrame], pd.DataFrame]


def _corrupt_file(root: Path, df: pd.DataFrame) -> pd.DataFrame:
    (root / df.loc[0, "path"]).write_bytes(b"this is not a jpeg")
    return df


def _truncate_file(root: Path, df: pd.DataFrame) -> pd.DataFrame:
    f = root / df.loc[0, "path"]
    f.write_bytes(f.read_bytes()[:200])
    return df


def _leak(root: Path, df: pd.DataFrame) -> pd.DataFrame:
    train = df.index[df["split"] == "train"][0]
    test = df.index[df["split"] == "test"][0]
    shutil.copy(root / df.loc[train, "path"], root / df.loc[test, "path"])
    df.loc[test, "sha256"] = df.loc[train, "sha256"]
    return df


CASES: dict[str, tuple[Breaker, str, str | None]] = {
    "missing column": (lambda r, d: d.drop(columns=["sha256"]), "expect_column_to_exist", "sha256"),
    "null label": (
        lambda r, d: d.assign(label=d["label"].mask(d.index == 0)),
        "expect_column_values_to_not_be_null",
        "label",
    ),
    "unknown label": (
        lambda r, d: d.assign(label=d["label"].mask(d.index == 0, "juggling")),
        "expect_column_values_to_be_in_set",
        "label",
    ),
    "missing class": (lambda r, d: d[d["label"] != "texting"], "expect_column_distinct_values_to_contain_set", "label"),
    "bad split": (
        lambda r, d: d.assign(split=d["split"].mask(d.index == 0, "holdout")),
        "expect_column_values_to_be_in_set",
        "split",
    ),
    "duplicate path": (
        lambda r, d: pd.concat([d, d.iloc[[0]]], ignore_index=True),
        "expect_column_values_to_be_unique",
        "path",
    ),
    "tiny image": (
        lambda r, d: d.assign(width=d["width"].mask(d.index == 0, 2)),
        "expect_column_values_to_be_between",
        "width",
    ),
    "missing file": (
        lambda r, d: (r / d.loc[0, "path"]).unlink() or d,
        "expect_column_values_to_be_in_set",
        "file_exists",
    ),
    "corrupt file": (_corrupt_file, "expect_column_values_to_be_in_set", "decodes"),
    "truncated file": (_truncate_file, "expect_column_values_to_be_in_set", "decodes"),
    "path escapes root": (
        lambda r, d: d.assign(path=d["path"].mask(d.index == 0, "../../etc/passwd")),
        "expect_column_values_to_be_in_set",
        "inside_root",
    ),
    "absolute path": (
        lambda r, d: d.assign(path=d["path"].mask(d.index == 0, "/etc/hostname")),
        "expect_column_values_to_be_in_set",
        "inside_root",
    ),
    "hash mismatch": (
        lambda r, d: d.assign(sha256=d["sha256"].mask(d.index == 0, "0" * 64)),
        "expect_column_values_to_be_in_set",
        "sha256_matches",
    ),
    "too few per class": (
        lambda r, d: d[~((d["label"] == "running") & (d.groupby("label").cumcount() >= 2))],
        "expect_column_values_to_be_between",
        "label_count",
    ),
    "train/test leak": (_leak, "expect_column_values_to_be_in_set", "train_test_leak"),
}


def test_clean_data_passes(tiny_data: Path) -> None:
    report = validate_data(tiny_data, DataConfig(min_per_class=5))
    assert report.success, report.to_text()
    assert report.evaluated >= 25


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_failure_is_caught_and_named(case: str, tiny_data: Path) -> None:
    breaker, expectation, column = CASES[case]
    df = pd.read_csv(tiny_data / "manifest.csv")
    breaker(tiny_data, df).to_csv(tiny_data / "manifest.csv", index=False)
    report = validate_data(tiny_data, DataConfig(min_per_class=5))
    assert not report.success
    hits = [f for f in report.failures if f.expectation == expectation and f.column == column]
    assert hits, report.to_text()
    text = report.to_text()
    assert expectation in text
    if column in ("file_exists", "decodes", "inside_root", "sha256_matches", "label"):
        assert hits[0].rows, "the report must name the offending rows"


def test_missing_data_dir_and_manifest(tmp_path: Path) -> None:
    report = validate_data(tmp_path / "nope", DataConfig())
    assert not report.success and "missing" in report.to_text()
    (tmp_path / "empty").mkdir()
    report = validate_data(tmp_path / "empty", DataConfig())
    assert not report.success and "manifest" in report.to_text()
