"""Orchestration: start a multi-VM assembly in startup order, waiting on every job with
a progress display, then stop it in reverse order.

VMs with a lower ``start_priority`` start first; VMs of equal priority start together
(asyncio.gather). Each wave waits for all its jobs while a progress line per job shows
how far it is. One server is made slow to start VMs, so the display has something to
show (the simulator's fault injection, a test hook).

Run: python examples/python/orchestration.py
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from typing import Dict, List

import ovm

ASSEMBLY = [
    # name, vcpus, memory MiB, start priority
    ("db-primary", 4, 8192, 0),
    ("db-replica", 4, 8192, 0),
    ("cache", 2, 2048, 1),
    ("app-1", 2, 4096, 2),
    ("app-2", 2, 4096, 2),
    ("app-3", 2, 4096, 2),
    ("lb", 1, 1024, 3),
]

BAR = 20


def bar(p: ovm.Progress) -> str:
    done = int(p.percent / 100 * BAR)
    return "#" * done + "." * (BAR - done)


async def show_progress(jobs: Dict[str, ovm.JobHandle[ovm.ServerHandle]]) -> None:
    """Redraws one line per job until all have finished."""
    tty = sys.stdout.isatty()
    first = True
    while True:
        lines = [
            f"  {name:<12} [{bar(job.progress)}] {job.progress.percent:5.1f}% {job.state}"
            for name, job in jobs.items()
        ]
        if tty and not first:
            print(f"\x1b[{len(lines)}A", end="")
        if tty or all(j.done for j in jobs.values()):
            print("\n".join(lines), flush=True)
        first = False
        if all(j.done for j in jobs.values()):
            return
        await asyncio.sleep(0.05)


async def start_wave(vms: Dict[str, ovm.VmHandle]) -> Dict[str, ovm.ServerHandle]:
    jobs = dict(zip(vms, await asyncio.gather(*(vm.start_async() for vm in vms.values()))))
    display = asyncio.ensure_future(show_progress(jobs))
    try:
        placed = await asyncio.gather(*(job.wait_async(timeout=60) for job in jobs.values()))
    finally:
        await display
    return dict(zip(vms, placed))


async def main() -> None:
    mgr = await ovm.Manager.open_in_memory_async(initiator="orchestration")
    pool = await (await mgr.create_pool_async("assembly")).wait_async(timeout=10)
    servers = await asyncio.gather(
        *[
            (await pool.add_server_async(f"host-{i}", "cpus=16,memory_mib=32768")).wait_async(timeout=30)
            for i in range(1, 4)
        ]
    )
    # One slow host: its starts take 0.4 s.
    mgr.sim_inject(servers[0], "start", delay=0.4)

    specs = [ovm.VmSpec(n, vcpus=c, memory_mib=m, start_priority=p) for n, c, m, p in ASSEMBLY]
    creates = await asyncio.gather(*(pool.create_vm_async(s) for s in specs))
    vms = await asyncio.gather(*(j.wait_async(timeout=30) for j in creates))
    by_name = {s.name: vm for s, vm in zip(specs, vms)}

    waves: List[List[ovm.VmSpec]] = [
        list(group)
        for _, group in itertools.groupby(sorted(specs, key=lambda s: s.start_priority), key=lambda s: s.start_priority)
    ]
    for wave in waves:
        print(f"priority {wave[0].start_priority}: starting {', '.join(s.name for s in wave)}")
        placed = await start_wave({s.name: by_name[s.name] for s in wave})
        for name, server in placed.items():
            print(f"  {name} runs on {server.info().name}")

    running = [vm.info().name for vm in vms if vm.state() is ovm.VmState.RUNNING]
    print(f"{len(running)}/{len(vms)} VMs running")

    for wave in reversed(waves):
        stops = await asyncio.gather(*(by_name[s.name].stop_async() for s in wave))
        await asyncio.gather(*(j.wait_async(timeout=60) for j in stops))
    print("assembly stopped in reverse order")


if __name__ == "__main__":
    asyncio.run(main())
