"""version-data: the dataset's content as a data version (DVC data registry, one tag per content)."""

from __future__ import annotations

from clip_har.data.versioning import DataVersion, commit_version
from clip_har.locks import file_lock
from clip_har.pipeline.prepare_data import DataRef
from clip_har.settings import StateDir


def run(state: StateDir, data: DataRef) -> DataVersion:
    with file_lock(state.data_lock):  # one git/DVC commit at a time
        return commit_version(state.data_registry, data.name)
