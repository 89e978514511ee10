from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from clip_har.data.manifest import from_csv, from_folder, stratified_split


def _folder(tmp_path: Path) -> Path:
    src = tmp_path / "photos"
    for label in ("running", "texting"):
        (src / label).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (40 + i, 30), (i * 20, 100, 50)).save(src / label / f"{i}.png")
    return src


def test_from_folder_copies_and_describes(tmp_path: Path) -> None:
    root = from_folder(_folder(tmp_path), tmp_path / "root")
    df = pd.read_csv(root / "manifest.csv")
    assert len(df) == 12 and set(df["label"]) == {"running", "texting"}
    assert df["sha256"].str.len().eq(64).all() and (df["height"] == 30).all()
    assert all((root / p).is_file() for p in df["path"])
    assert not any(Path(p).is_absolute() for p in df["path"])


def test_from_csv_keeps_given_split(tmp_path: Path) -> None:
    src = _folder(tmp_path)
    rows = [
        {"path": f"photos/{lab}/{i}.png", "label": lab, "split": "train" if i < 4 else "test"}
        for lab in ("running", "texting")
        for i in range(6)
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "list.csv", index=False)
    root = from_csv(tmp_path / "list.csv", tmp_path / "root")
    df = pd.read_csv(root / "manifest.csv")
    assert (df["split"] == [r["split"] for r in rows]).all()
    assert src.is_dir()


def test_from_csv_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    pd.DataFrame([{"path": "nope.png", "label": "running"}]).to_csv(tmp_path / "l.csv", index=False)
    with pytest.raises(FileNotFoundError, match="row 2"):
        from_csv(tmp_path / "l.csv", tmp_path / "root")
    assert not (tmp_path / "root").exists()  # nothing half-written


def test_stratified_split_is_deterministic_and_stratified() -> None:
    labels = ["a"] * 20 + ["b"] * 40
    s1 = stratified_split(labels, (0.7, 0.15, 0.15), seed=1)
    assert s1 == stratified_split(labels, (0.7, 0.15, 0.15), seed=1)
    assert s1 != stratified_split(labels, (0.7, 0.15, 0.15), seed=2)
    assert sum(1 for lab, s in zip(labels, s1, strict=True) if lab == "a" and s == "test") == 3
    assert sum(1 for lab, s in zip(labels, s1, strict=True) if lab == "b" and s == "test") == 6
    with pytest.raises(ValueError):
        stratified_split(labels, (0.5, 0.5, 0.5), seed=0)
