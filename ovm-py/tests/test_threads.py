"""The GIL is released while ovm waits, and handles are safe to share between threads."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import List

import ovm
from conftest import T, Bed, make_bed


def test_other_threads_run_while_a_wait_blocks(one: Bed) -> None:
    vm = one.vm("slow")
    one.mgr.sim_inject(one.servers[0], "start", delay=0.5)
    job = vm.start()
    ticks = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        job.wait(timeout=T)
    finally:
        stop.set()
        t.join()
    # Holding the GIL for 0.5 s would have let the spinner run a handful of times at
    # most (the switch interval is 5 ms, and a blocked holder never yields).
    assert ticks > 100_000, ticks


def test_shared_handles_across_threads() -> None:
    bed = make_bed([(f"s{i}", 16, 65536) for i in range(4)])
    shared = bed.vm("shared")
    shared.start().wait(timeout=T)

    def worker(n: int) -> List[str]:
        seen = []
        for i in range(5):
            vm = bed.pool.create_vm(ovm.VmSpec(f"w{n}-{i}", memory_mib=256)).wait(timeout=T)
            vm.start().wait(timeout=T)
            seen.append(str(shared.state()))
            vm.stop().wait(timeout=T)
            vm.delete().wait(timeout=T)
        return seen

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(worker, range(8)))
    assert all(s == "running" for r in results for s in r)
    assert [v.name for v in bed.mgr.vms()] == ["shared"]


def test_many_threads_wait_on_one_job(one: Bed) -> None:
    vm = one.vm("v")
    one.mgr.sim_inject(one.servers[0], "start", delay=0.2)
    job = vm.start()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: job.wait(timeout=T), range(8)))
    assert all(r == one.servers[0] for r in results)


def test_state_reads_race_with_jobs(one: Bed) -> None:
    vms = [one.vm(f"v{i}", memory_mib=128) for i in range(8)]
    stop = threading.Event()
    reads = 0
    errors: List[BaseException] = []

    def reader() -> None:
        nonlocal reads
        try:
            while not stop.is_set():
                for vm in vms:
                    assert isinstance(vm.state(), ovm.VmState)
                    reads += 1
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    for _ in range(3):
        for start in [vm.start() for vm in vms]:
            start.wait(timeout=T)
        for stop_job in [vm.stop() for vm in vms]:
            stop_job.wait(timeout=T)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors
    assert reads > 0 and time.monotonic() - t0 < T
