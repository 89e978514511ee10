"""Batch inference on a real Dask cluster (a scheduler and two worker processes on two hosts):
the same rows, in the same order, as one process; unreadable files reported in their rows;
both workers take chunks; a scheduler that is not there is one clear error."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import netns
import pytest
from PIL import Image
from procs import stop_group

from clip_har.export.onnx_export import export_untrained
from clip_har.serving.batch import collect, predict_files
from clip_har.serving.distributed import predict_distributed
from clip_har.serving.predictor import Predictor

pytestmark = pytest.mark.integration
DASK = [sys.executable, "-m", "distributed.cli.dask_scheduler"], [sys.executable, "-m", "distributed.cli.dask_worker"]


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):  # workers before the scheduler
        stop_group(proc, 30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, free_port: Callable[[], int]) -> Iterator[str]:
    """tcp://<scheduler>:<port> with two single-threaded worker processes: the scheduler and one
    worker on one host, the other worker on a second host (network namespaces; both on loopback
    where namespaces cannot be made)."""
    from distributed import Client

    tmp = tmp_path_factory.mktemp("dask")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    scheduler_cmd, worker_cmd = DASK
    procs: list[subprocess.Popen] = []

    def start(cmd: list[str], name: str) -> None:
        log = open(tmp / f"{name}.log", "w")  # the child owns it
        procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    with ExitStack() as stack:
        if netns.unavailable():
            hosts = [None, None]
            addresses = ["127.0.0.1", "127.0.0.1"]
        else:
            hosts = list(stack.enter_context(netns.hosts(2)).hosts)
            addresses = [h.address for h in hosts]
        run = [lambda cmd, h=h: h.command(cmd) if h else cmd for h in hosts]
        port = free_port()
        address = f"tcp://{addresses[0]}:{port}"
        try:
            start(run[0]([*scheduler_cmd, "--host", addresses[0], "--port", str(port), "--no-dashboard"]), "scheduler")
            for i in range(2):
                worker = [*worker_cmd, address, "--nthreads", "1", "--no-dashboard", "--host", addresses[i]]
                start(run[i]([*worker, "--name", f"w{i}"]), f"w{i}")
            with Client(address, timeout=60) as client:
                client.wait_for_workers(2, timeout=120)
            yield address
        finally:
            _stop(procs)


@pytest.fixture(scope="module")
def inputs(tiny_data_master: Path, tmp_path_factory: pytest.TempPathFactory, write_video) -> list[Path]:
    """Images, a video, an undecodable file and one that does not exist, interleaved."""
    tmp = tmp_path_factory.mktemp("inputs")
    images = sorted((tiny_data_master / "images").rglob("*.jpg"))[:40]
    video = write_video(tmp / "clip.mp4", [Image.open(p).convert("RGB") for p in images[:4]], fps=2)
    (tmp / "broken.jpg").write_bytes(b"not an image")
    return [*images[:10], video, tmp / "broken.jpg", *images[10:25], tmp / "missing.png", *images[25:]]


def test_two_workers_give_the_rows_of_one_process(cluster: str, inputs: list[Path], tmp_path: Path) -> None:
    from distributed import Client

    onnx = export_untrained(tmp_path / "onnx", 0)
    local = predict_files(Predictor(onnx), collect(inputs), 8, 3, 1.0)
    done: list[int] = []
    files = collect(inputs)
    rows = predict_distributed(cluster, onnx, files, 8, 3, 1.0, chunk_files=7, threads=1, progress=done.append)
    assert sum(done) == len(inputs)
    assert [(r.path, r.frame_s, r.label) for r in rows] == [(r.path, r.frame_s, r.label) for r in local]
    assert all(abs(a.score - b.score) < 1e-5 for a, b in zip(rows, local, strict=True) if a.score is not None)
    errors = {Path(r.path).name: r.error for r in rows if r.error}
    assert set(errors) == {"broken.jpg", "missing.png"} and "No such file" in errors["missing.png"]
    assert sum(1 for r in rows if r.frame_s is not None) >= 2  # the video's frames, each a row
    with Client(cluster, timeout=30) as client:  # both workers loaded the model: both took chunks
        from clip_har.serving import distributed

        loaded = client.run(lambda: len(distributed._models))
    assert sorted(loaded.values()) == [1, 1]


def test_no_scheduler_is_one_clear_error(tmp_path: Path, free_port: Callable[[], int]) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError, match=f"no Dask scheduler at {address}"):
        predict_distributed(address, tmp_path, [], 8, 3, 1.0, connect_timeout_s=2)


def test_two_models_and_repeated_files_on_one_cluster(cluster: str, inputs: list[Path], tmp_path: Path) -> None:
    """A second run with another model is computed by that model (not the first one's files left
    on the cluster), and a file listed twice, so that two chunks are identical, gives its rows twice."""
    images = [p for p in inputs if p.suffix == ".jpg" and p.exists()][:4]
    for seed in (0, 1):
        onnx = export_untrained(tmp_path / f"onnx{seed}", seed)
        local = predict_files(Predictor(onnx), images * 2, 8, 3, 1.0)
        rows = predict_distributed(cluster, onnx, images * 2, 8, 3, 1.0, chunk_files=4, threads=1)
        assert len(rows) == len(local) == 8
        assert [r.path for r in rows] == [r.path for r in local]
        assert all(abs(a.score - b.score) < 1e-5 for a, b in zip(rows, local, strict=True)), seed
