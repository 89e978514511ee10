"""DVC data registry: one tag per distinct content, any version readable back via dvc.api."""

from pathlib import Path

import pandas as pd

from clip_har.data.versioning import commit_version, dataset_dir, init_registry, list_versions, read_file
from clip_har.synth.generate import SynthSpec, synthesize


def test_versions_round_trip(tmp_path: Path) -> None:
    repo = init_registry(tmp_path / "registry", tmp_path / "remote")
    assert init_registry(repo, tmp_path / "remote") == repo  # idempotent
    synthesize(dataset_dir(repo, "d"), SynthSpec(n=30, seed=0, size=32))
    v1 = commit_version(repo, "d")
    assert v1.tag == "d-v1" and v1.md5.endswith(".dir")
    assert commit_version(repo, "d").tag == "d-v1"  # same content, same version
    synthesize(dataset_dir(repo, "d"), SynthSpec(n=45, seed=0, size=32))
    v2 = commit_version(repo, "d")
    assert v2.tag == "d-v2" and v2.md5 != v1.md5
    assert list_versions(repo, "d") == ["d-v1", "d-v2"]
    old = read_file(repo, "d", "manifest.csv", v1.tag)
    assert old.count(b"\n") == 31  # header + 30 rows: the past version, not the work tree
    assert len(pd.read_csv(dataset_dir(repo, "d") / "manifest.csv")) == 45
    assert any((tmp_path / "remote").rglob("*"))  # pushed to the DVC remote


def test_the_registry_lock_excludes_other_holders(tmp_path: Path) -> None:
    """While one pipeline holds the lock, another cannot take it (it would wait); after, it can."""
    from clip_har.locks import file_lock, is_locked

    lock = tmp_path / "locks" / "data.lock"
    with file_lock(lock):
        assert is_locked(lock)  # probed through another open file, as another process has
    assert not is_locked(lock)
