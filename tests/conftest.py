"""Shared fixtures: a tiny synthetic dataset, an isolated state dir, one Prefect harness, free
loopback ports; tests marked `gpu` are skipped where no CUDA GPU is present."""

from __future__ import annotations

import os
import shutil
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clip_har.state import ENV_PREFIX, TELEMETRY_OFF
from clip_har.synth.generate import SynthSpec, synthesize

for _k, _v in TELEMETRY_OFF.items():
    os.environ.setdefault(_k, _v)

TINY_SPEC = SynthSpec(n=150, seed=0, size=48)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch  # only when a `gpu` test was collected

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in gpu_items:
        item.add_marker(skip)


def _setting_names() -> list[str]:
    """Every CLIP_HAR_* setting's variable; on a GPU image without pydantic-settings (where only
    the `gpu` tests run: ../shared/gpu/README.md), every CLIP_HAR_* variable of the environment."""
    try:
        from clip_har.settings import Settings, env_name
    except ImportError:
        return [n for n in os.environ if n.startswith(ENV_PREFIX)]
    return [env_name(f) for f in Settings.model_fields]


@pytest.fixture(autouse=True)
def _default_settings() -> Iterator[None]:
    """Each test starts from the settings' defaults, whatever the shell (or an earlier test's
    `apply_env`) exported; tests set what they need with monkeypatch."""
    names = _setting_names()
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    yield
    for n in names:
        os.environ.pop(n, None)
    os.environ.update(saved)


def _free_port() -> int:
    """A loopback port free right now (the OS picks it; a race with other processes is possible)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """Call it for a free loopback port (session-scoped, so module fixtures can use it too)."""
    return _free_port


def _write_video(path: Path, frames: list, fps: int = 2, size: int = 64) -> Path:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_image(img.convert("RGB").resize((size, size)))):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="session")
def write_video() -> Callable[..., Path]:
    """Call it to encode PIL frames as an MPEG-4 video of size×size pixels at `fps`."""
    return _write_video


@pytest.fixture(scope="session")
def tiny_data_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize(tmp_path_factory.mktemp("tiny") / "data", TINY_SPEC)


@pytest.fixture
def tiny_data(tiny_data_master: Path, tmp_path: Path) -> Path:
    """A private copy each test may break."""
    return Path(shutil.copytree(tiny_data_master, tmp_path / "data"))


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "state"
    monkeypatch.setenv("CLIP_HAR_HOME", str(root))
    # BentoML reads its home once, at import: the first test that packages fixes it.
    monkeypatch.setenv("BENTOML_HOME", str(root / "bentoml"))
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(key, raising=False)
    return root


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory):
    """One Prefect test server for the whole session (~10 s to start)."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def reachable(tmp_path: Path) -> None:
    """As root, a PostgreSQL cluster under tmp_path runs as `postgres`, which must traverse
    tmp_path's parents (pytest makes its base folder 0700). Left so: restoring it would cut off a
    cluster of another test run still living under the same base folder."""
    if os.geteuid() == 0:
        for folder in [tmp_path, *tmp_path.parents]:
            mode = folder.stat().st_mode
            if not mode & stat.S_IXOTH:
                folder.chmod(mode | stat.S_IXOTH)
