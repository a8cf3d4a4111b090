"""Fixtures: managers on private in-memory stores with simulated servers."""

from __future__ import annotations

import dataclasses
from typing import Iterator, List, Tuple

import pytest

import ovm

#: Generous limit for waits that should finish at once: a hang fails, never blocks.
T = 20.0


@dataclasses.dataclass
class Bed:
    mgr: ovm.Manager
    pool: ovm.PoolHandle
    servers: List[ovm.ServerHandle]

    def vm(self, name: str, vcpus: int = 1, memory_mib: int = 512) -> ovm.VmHandle:
        spec = ovm.VmSpec(name, vcpus=vcpus, memory_mib=memory_mib)
        return self.pool.create_vm(spec).wait(timeout=T)


def make_bed(servers: List[Tuple[str, int, int]], **open_args: object) -> Bed:
    mgr = ovm.Manager.open_in_memory(initiator="test", **open_args)  # type: ignore[arg-type]
    pool = mgr.create_pool("p").wait(timeout=T)
    handles = [
        pool.add_server(name, f"cpus={cpus},memory_mib={mem}").wait(timeout=T)
        for name, cpus, mem in servers
    ]
    return Bed(mgr, pool, handles)


@pytest.fixture
def bed() -> Iterator[Bed]:
    """A pool with a small and a big simulated server."""
    yield make_bed([("small", 4, 4096), ("big", 16, 65536)])


@pytest.fixture
def one() -> Iterator[Bed]:
    """A pool with one simulated server of 8 CPUs and 8 GiB."""
    yield make_bed([("s", 8, 8192)])
