"""Multi-node training for real: two hosts (network namespaces, one process each) started by
`torchrun` with its rendezvous over the network and gloo between them train the tiny model to
the same metrics as one host with two processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import netns
import pytest

from clip_har.train.launch import argv

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DDP = ("train.strategy=ddp", "train.accelerator=cpu", "train.max_epochs=2")


def _launcher(tiny_data: Path, out: Path, *overrides: str) -> list[str]:
    """`-m clip_har.train.launch` and its arguments, as the pipeline's train stage builds them."""
    args = argv("tiny", overrides, tiny_data, out / "run", f"sqlite:///{out / 'mlflow.db'}", result=out / "result.json")
    return ["-m", "clip_har.train.launch", *args]


def _wait(procs: list[subprocess.Popen], logs: list[Path], seconds: float = 600) -> None:
    """All exit 0, or the first failure's log: the others are stopped at once rather than left
    waiting for a peer that is gone."""
    deadline = time.monotonic() + seconds
    try:
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.returncode not in (None, 0) for p in procs):
                break
            time.sleep(0.5)
    finally:
        for proc in procs:
            if proc.poll() is None:  # the whole group: torchrun's ranks too
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
    for proc, log in zip(procs, logs, strict=True):
        assert proc.returncode == 0, log.read_text()[-3000:]


def test_two_hosts_train_like_one_host_with_two_processes(tiny_data: Path, tmp_path: Path) -> None:
    if reason := netns.unavailable():
        pytest.skip(reason)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    one, two = tmp_path / "one-host", tmp_path / "two-hosts"
    one.mkdir(), two.mkdir()
    # one host, two processes: Lightning starts the second rank itself
    log = one / "train.log"
    with log.open("w") as f:
        cmd = [sys.executable, *_launcher(tiny_data, one, *DDP, "train.devices=2")]
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=f, start_new_session=True)
        _wait([proc], [log])
    # two hosts, one process each: torchrun on each, node 0's address is the rendezvous
    with netns.hosts(2) as net:
        head = net.hosts[0]
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1"]
        torchrun += ["--master-addr", head.address, "--master-port", str(29500 + os.getpid() % 1000)]
        procs, logs = [], []
        for rank, host in enumerate(net.hosts):
            logs.append(two / f"node{rank}.log")
            cmd = [*torchrun, "--node-rank", str(rank), *_launcher(tiny_data, two, *DDP, "train.num_nodes=2")]
            with logs[-1].open("w") as f:  # gloo over the hosts' own interface, not loopback
                procs.append(
                    subprocess.Popen(
                        host.command(cmd),
                        env={**env, "GLOO_SOCKET_IFNAME": "eth0"},
                        stdout=f,
                        stderr=f,
                        start_new_session=True,
                    )
                )
        _wait(procs, logs)
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in logs[1].read_text()  # the second host held rank 1
    a, b = (json.loads((d / "result.json").read_text()) for d in (one, two))
    assert a["epochs"] == b["epochs"] == 2
    # the same global batch, sampler and seed: the same model up to all-reduce rounding
    assert abs(a["best_val_f1"] - b["best_val_f1"]) <= 0.02, (a["best_val_f1"], b["best_val_f1"])
