"""ingest-labelled (the data-ingest flow): newly labelled images (e.g. the review queue's export)
merged into the profile's dataset behind the data gate."""

from __future__ import annotations

from pathlib import Path

from clip_har.config import PipelineConfig
from clip_har.data.manifest import MANIFEST
from clip_har.data.merge import merge_folder
from clip_har.data.validate import DataValidationError
from clip_har.data.versioning import dataset_dir
from clip_har.locks import file_lock
from clip_har.pipeline.prepare_data import DataRef
from clip_har.settings import StateDir


def run(cfg: PipelineConfig, state: StateDir, folder: Path, report_path: Path) -> tuple[DataRef, int]:
    """(the dataset, images added); the gate's result is saved to `report_path` either way."""
    d = cfg.data
    root = dataset_dir(state.data_registry, d.name)
    if not (root / MANIFEST).is_file():
        raise FileNotFoundError(f"dataset {d.name!r} does not exist yet: run the training pipeline first")
    report_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with file_lock(state.data_lock):  # a training run may be preparing the same dataset
            added, report = merge_folder(root, folder, d)
    except DataValidationError as exc:
        exc.report.save(report_path)
        raise
    report.save(report_path)
    return DataRef(d.name, str(root), "ingest"), added
