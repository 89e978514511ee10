"""Add newly labelled images (an image folder, one sub-folder per class) to a data root.

The merge happens in a staged copy that must pass the data gate before it replaces the
dataset, so a bad batch never touches the current data.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from clip_har.config import DataConfig
from clip_har.data.manifest import (
    IMAGE_SUFFIXES,
    class_folder_files,
    describe_files,
    read_manifest,
    staged_dir,
    stratified_split,
    write_manifest,
)
from clip_har.data.validate import ValidationReport, require_valid, validate_data


def merge_folder(root: Path, folder: Path, data: DataConfig) -> tuple[int, ValidationReport]:
    """Copy `folder/<label>/*` into `root`, split train/val/test per class like the dataset itself,
    so evaluation and the drift reference follow the data as it grows (new conditions such as
    night photos get test rows, not only training rows). Returns (rows added, gate report).
    Raises DataValidationError (root untouched) if the merged dataset fails the gate."""
    root, folder = Path(root), Path(folder)
    files = class_folder_files(folder, IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder} has no images in class sub-folders")
    report: ValidationReport | None = None
    with staged_dir(root) as tmp:
        shutil.copytree(root, tmp, dirs_exist_ok=True)
        rows = []
        for f in files:
            rel = Path("images") / f.parent.name / f"ingest-{f.stem}{f.suffix.lower()}"
            if (tmp / rel).exists():
                raise ValueError(f"{f.name} was already ingested as {rel}")
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, tmp / rel)
            rows.append({"path": rel.as_posix(), "label": f.parent.name, "caption": "", "source": f"ingest:{f}"})
        added = describe_files(tmp, rows)
        added["split"] = stratified_split(added["label"].tolist(), data.splits, data.split_seed)
        write_manifest(pd.concat([read_manifest(tmp), added], ignore_index=True), tmp)
        report = require_valid(validate_data(tmp, data))
    return len(files), report
