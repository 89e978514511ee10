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


@pytest.mark.parametrize("label", ["../../escaped", "/abs-escape", "a/b", "..", "", "run ning", "x" * 65])
def test_from_csv_refuses_a_label_that_is_not_a_class_name(tmp_path: Path, label: str) -> None:
    """Labels become folder names: one such as ../../x would write outside the data root."""
    _folder(tmp_path)
    rows = [{"path": "photos/running/0.png", "label": "running"}, {"path": "photos/running/1.png", "label": label}]
    pd.DataFrame(rows).to_csv(tmp_path / "l.csv", index=False)
    with pytest.raises(ValueError, match=r"row 3: label"):
        from_csv(tmp_path / "l.csv", tmp_path / "data" / "root")
    assert not (tmp_path / "data").exists()  # nothing written, inside or out
    assert not (tmp_path / "escaped").exists() and not Path("/abs-escape").exists()


def test_from_csv_paths_outside_its_folder_need_the_flag(tmp_path: Path) -> None:
    _folder(tmp_path)
    (tmp_path / "lists").mkdir()
    rows = [{"path": "../photos/running/0.png", "label": "running"}]
    rows.append({"path": str(tmp_path / "photos" / "texting" / "0.png"), "label": "texting"})
    pd.DataFrame(rows).to_csv(tmp_path / "lists" / "l.csv", index=False)
    with pytest.raises(ValueError, match=r"row 2: .*outside"):
        from_csv(tmp_path / "lists" / "l.csv", tmp_path / "root")
    assert not (tmp_path / "root").exists()
    root = from_csv(tmp_path / "lists" / "l.csv", tmp_path / "root", allow_outside=True)
    assert len(pd.read_csv(root / "manifest.csv")) == 2


def test_from_folder_refuses_sub_folders_that_are_not_class_names(tmp_path: Path) -> None:
    src = _folder(tmp_path)
    (src / "not a class").mkdir()
    Image.new("RGB", (40, 30)).save(src / "not a class" / "0.png")
    with pytest.raises(ValueError, match="not a class"):
        from_folder(src, tmp_path / "root")
    assert not (tmp_path / "root").exists()


def test_cli_ingest_names_the_row_and_takes_the_flag(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from clip_har_cli.main import app

    _folder(tmp_path)
    (tmp_path / "lists").mkdir()
    pd.DataFrame([{"path": "../photos/running/0.png", "label": "running"}]).to_csv(tmp_path / "lists" / "l.csv")
    args = ["data", "ingest", str(tmp_path / "lists" / "l.csv"), str(tmp_path / "root"), "--kind", "csv"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "row 2" in refused.output and len(refused.output.strip().splitlines()) == 1
    assert CliRunner().invoke(app, [*args, "--allow-outside"]).exit_code == 0


def test_merge_refuses_sub_folders_that_are_not_class_names(tiny_data: Path, tmp_path: Path) -> None:
    from clip_har.config import DataConfig
    from clip_har.data.merge import merge_folder

    before = (tiny_data / "manifest.csv").read_bytes()
    (tmp_path / "new" / "run ning").mkdir(parents=True)
    Image.new("RGB", (40, 30)).save(tmp_path / "new" / "run ning" / "0.png")
    with pytest.raises(ValueError, match="not a class name"):
        merge_folder(tiny_data, tmp_path / "new", DataConfig(min_per_class=5))
    assert (tiny_data / "manifest.csv").read_bytes() == before


def test_real_dataset_class_names_and_hidden_folders(tmp_path: Path) -> None:
    """Dotted names (Caltech-style "001.ak47") and a class called "None" are class names; a
    hidden sub-folder (.ipynb_checkpoints) is not a class and is skipped."""
    src = tmp_path / "photos"
    for label in ("001.ak47", "None", ".ipynb_checkpoints"):
        (src / label).mkdir(parents=True)
        Image.new("RGB", (40, 30)).save(src / label / "0.png")
    df = pd.read_csv(from_folder(src, tmp_path / "root") / "manifest.csv", keep_default_na=False)
    assert sorted(df["label"]) == ["001.ak47", "None"]
    rows = [{"path": "photos/None/0.png", "label": "None"}, {"path": "photos/001.ak47/0.png", "label": "001.ak47"}]
    pd.DataFrame(rows).to_csv(tmp_path / "l.csv", index=False)
    df = pd.read_csv(from_csv(tmp_path / "l.csv", tmp_path / "root2") / "manifest.csv", keep_default_na=False)
    assert list(df["label"]) == ["None", "001.ak47"]
