"""Data versions with DVC's data-registry pattern.

The pipeline manages a git+DVC repository inside the state dir. Each dataset lives under
`datasets/<name>/` in its work tree; a data version is one git commit plus a tag
`<name>-v<N>`, with the files pushed to a DVC remote (a local directory by default, S3 by
config). Any past version can be read back with `dvc.api` at its tag.
"""

from __future__ import annotations

import io
import re
import subprocess
from contextlib import redirect_stdout
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

GIT_ID = ["-c", "user.name=clip-har", "-c", "user.email=clip-har@localhost", "-c", "commit.gpgsign=false"]


@dataclass(frozen=True)
class DataVersion:
    name: str
    tag: str  # git tag in the registry: the version id users see
    md5: str  # DVC's directory hash: identical content → identical md5
    commit: str
    registry: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", *GIT_ID, *args], cwd=repo, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {out.stderr.strip()}")
    return out.stdout.strip()


def init_registry(repo: Path, remote: str | Path) -> Path:
    """Create the registry repo (idempotent): git, DVC, a default remote, telemetry off. `remote`
    is a folder or a URL (s3://... needs the dvc-s3 plugin, ssh://... dvc-ssh); it is written to
    .dvc/config.local on every call (machine-specific, never committed), so a changed
    CLIP_HAR_DVC_REMOTE takes effect on the next run."""
    repo = Path(repo)
    if "://" not in str(remote):
        remote = Path(remote).resolve()
        remote.mkdir(parents=True, exist_ok=True)
    if not ((repo / ".dvc").is_dir() and (repo / ".git").is_dir()):
        _create_registry(repo, remote)
    (repo / ".dvc" / "config.local").write_text(f"['remote \"local\"']\n    url = {remote}\n")
    return repo


def _create_registry(repo: Path, remote: str | Path) -> None:
    from dvc.repo import Repo

    repo.mkdir(parents=True, exist_ok=True)
    if not (repo / ".git").is_dir():
        _git(repo, "init", "-q", "-b", "main")
    with redirect_stdout(io.StringIO()):  # DVC prints git hints meant for humans at a shell
        Repo.init(str(repo), force=True)
    with (repo / ".dvc" / "config").open("w") as f:
        f.write(
            "[core]\n    remote = local\n    analytics = false\n    check_update = false\n    autostage = true\n"
            f"['remote \"local\"']\n    url = {remote}\n"
        )
    (repo / "datasets").mkdir(exist_ok=True)
    _git(repo, "add", ".dvc", ".dvcignore")
    _git(repo, "commit", "-q", "-m", "data registry")


def dataset_dir(repo: Path, name: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"bad dataset name {name!r}: letters, digits, '_', '.', '-' only")
    return Path(repo) / "datasets" / name


def _tags(repo: Path, name: str) -> list[str]:
    tags = _git(repo, "tag", "--list", f"{name}-v*").split()
    return sorted(tags, key=lambda t: int(t.rsplit("-v", 1)[1]))


def _md5_of(dvc_file: Path) -> str:
    return str(yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"])


def commit_version(repo: Path, name: str) -> DataVersion:
    """Track the dataset's current content; a new tag only when its content changed."""
    from dvc.repo import Repo

    repo = Path(repo)
    data = dataset_dir(repo, name)
    if not data.is_dir():
        raise FileNotFoundError(f"no dataset {name!r} in the data registry {repo}")
    dvc = Repo(str(repo))
    try:
        with redirect_stdout(io.StringIO()):
            dvc.add(str(data))
            dvc.push()
    finally:
        dvc.close()
    dvc_file = data.with_name(f"{name}.dvc")
    md5 = _md5_of(dvc_file)
    tags = _tags(repo, name)
    if tags and _md5_of_at(repo, name, tags[-1]) == md5:
        return DataVersion(name, tags[-1], md5, _git(repo, "rev-list", "-n1", tags[-1]), str(repo))
    tag = f"{name}-v{len(tags) + 1}"
    _git(repo, "add", str(dvc_file.relative_to(repo)), str((repo / "datasets" / ".gitignore").relative_to(repo)))
    _git(repo, "commit", "-q", "--allow-empty", "-m", f"{tag}: {md5}")
    _git(repo, "tag", tag)
    return DataVersion(name, tag, md5, _git(repo, "rev-parse", "HEAD"), str(repo))


def _md5_of_at(repo: Path, name: str, rev: str) -> str:
    return str(yaml.safe_load(_git(repo, "show", f"{rev}:datasets/{name}.dvc"))["outs"][0]["md5"])


def read_file(repo: Path, name: str, rel_path: str, rev: str) -> bytes:
    """One file of a past version, e.g. its manifest, through dvc.api."""
    import dvc.api

    return dvc.api.read(f"datasets/{name}/{rel_path}", repo=str(repo), rev=rev, mode="rb")


def list_versions(repo: Path, name: str) -> list[str]:
    return _tags(repo, name) if (Path(repo) / ".git").is_dir() else []
