"""Several hosts on this machine for multi-host tests: Linux network namespaces joined by a
bridge. Each host has its own network stack (loopback included) and one interface, `eth0`, on
a private /24; the root namespace holds the bridge at .1, so a server bound there is reachable
from every host. Traffic never leaves this machine. Needs root and `ip` (iproute2)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


def unavailable() -> str | None:
    """Why hosts cannot be made here (a skip reason), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass(frozen=True)
class Host:
    name: str  # the namespace
    address: str  # its eth0 address

    def command(self, cmd: list[str]) -> list[str]:
        """`cmd` run inside this host's network namespace."""
        return ["ip", "netns", "exec", self.name, *cmd]


@dataclass(frozen=True)
class Hosts:
    gateway: str  # the root namespace's address on the bridge
    hosts: tuple[Host, ...]


def _free_subnet() -> str:
    """A random 10.x.y.0/24 that no interface of this machine uses yet (concurrent test runs,
    container networks)."""
    used = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True).stdout
    for _ in range(50):
        net = f"10.{secrets.choice(range(100, 200))}.{secrets.randbelow(256)}"
        if f" {net}." not in used:
            return net
    raise RuntimeError("no free 10.x.y.0/24 for test hosts")


@contextmanager
def hosts(count: int) -> Iterator[Hosts]:
    """`count` hosts on a free private /24 under names of their own (random, so concurrent test
    runs do not collide); everything made here is removed again on exit, and nothing else."""
    tag = f"ch{secrets.token_hex(3)}"
    net = _free_subnet()
    bridge = f"{tag}br"
    made: list[str] = []
    bridged = False
    try:
        _ip("link", "add", bridge, "type", "bridge")
        bridged = True
        _ip("addr", "add", f"{net}.1/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        out = []
        for i in range(count):
            ns, outer = f"{tag}h{i}", f"{tag}v{i}"
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", outer, "master", bridge)
            _ip("link", "set", outer, "up")
            address = f"{net}.{i + 2}"
            for args in (("addr", "add", f"{address}/24", "dev", "eth0"), ("link", "set", "eth0", "up")):
                _ip("netns", "exec", ns, "ip", *args)
            _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
            _ip("netns", "exec", ns, "ip", "route", "add", "default", "via", f"{net}.1")
            out.append(Host(ns, address))
        yield Hosts(f"{net}.1", tuple(out))
    finally:
        for ns in made:  # deleting a namespace deletes its veth end, and so the pair
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if bridged:
            subprocess.run(["ip", "link", "del", bridge], capture_output=True)
