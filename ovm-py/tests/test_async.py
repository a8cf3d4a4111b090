"""asyncio: every blocking call has an awaitable twin on the same runtime."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from typing import List

import pytest

import ovm
from conftest import T, make_bed


def test_gather_of_many_starts() -> None:
    async def main() -> List[ovm.ServerHandle]:
        mgr = await ovm.Manager.open_in_memory_async(initiator="async")
        pool = await (await mgr.create_pool_async("p")).wait_async(timeout=T)
        servers = await asyncio.gather(
            *[
                (await pool.add_server_async(f"s{i}", "cpus=16,memory_mib=16384")).wait_async(timeout=T)
                for i in range(4)
            ]
        )
        creates = await asyncio.gather(
            *(pool.create_vm_async(ovm.VmSpec(f"vm{i:02}", memory_mib=512)) for i in range(64))
        )
        vms = await asyncio.gather(*(j.wait_async(timeout=T) for j in creates))
        starts = await asyncio.gather(*(vm.start_async() for vm in vms))
        placed = await asyncio.gather(*(j.wait_async(timeout=T) for j in starts))
        assert all(vm.state() is ovm.VmState.RUNNING for vm in vms)
        assert {s.id for s in placed} <= {s.id for s in servers}
        # Placement sees concurrent reservations: the burst spreads evenly.
        counts = sorted(len(s.vms()) for s in servers)
        assert counts == [16, 16, 16, 16]
        jobs = await mgr.jobs_async()
        assert len(jobs) == 1 + 4 + 64 + 64
        return placed

    assert len(asyncio.run(main())) == 64


def test_async_timeout_errors_and_cancellation() -> None:
    bed = make_bed([("s", 8, 8192)])
    vm = bed.vm("slow")
    bed.mgr.sim_inject(bed.servers[0], "start", delay=0.5)

    async def main() -> None:
        job = await vm.start_async()
        with pytest.raises(ovm.TimeoutError) as e:
            await job.wait_async(timeout=0.05)
        assert e.value.after == pytest.approx(0.05)
        # Cancelling the awaitable (asyncio's own timeout) stops waiting, not the job.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(job.wait_async(), 0.05)
        assert not job.done
        updates = [p async for p in job.progress_stream()]
        assert updates[-1].percent == 100.0
        assert await job.wait_async(timeout=T) == bed.servers[0]
        with pytest.raises(ovm.NotFound):
            await bed.mgr.job_async("0000")
        with pytest.raises(ovm.InvalidState):
            await vm.start_async()
        events = await bed.mgr.events_async(object_id=vm.id)
        assert [e.action for e in events] == ["vm.create", "vm.start"]

    asyncio.run(main())


def test_awaitables_need_a_running_loop() -> None:
    bed = make_bed([("s", 8, 8192)])
    with pytest.raises(RuntimeError):
        bed.vm("v").start_async()


def test_the_event_loop_stays_free_while_jobs_run() -> None:
    bed = make_bed([("s", 8, 8192)])
    vm = bed.vm("slow")
    bed.mgr.sim_inject(bed.servers[0], "start", delay=0.3)

    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        t = asyncio.ensure_future(ticker())
        t0 = time.monotonic()
        await (await vm.start_async()).wait_async(timeout=T)
        assert time.monotonic() - t0 >= 0.25
        t.cancel()
        return ticks

    assert asyncio.run(main()) >= 10


def test_cancelling_an_awaitable_drops_its_rust_future() -> None:
    bed = make_bed([("s", 8, 8192)])
    vm = bed.vm("slow")
    bed.mgr.sim_inject(bed.servers[0], "start", delay=3600)
    pending = ovm._ovm._pending_awaitables

    async def main() -> None:
        job = await vm.start_async()
        before = pending()
        waits = [job.wait_async(), vm.wait_state_async(ovm.VmState.RUNNING), job.wait_async(timeout=3600)]
        assert pending() == before + 3
        # asyncio's own timeout, gather's cancellation, a direct cancel(): each drops it.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(waits[0], 0.05)
        gathered = asyncio.gather(waits[1])
        direct = asyncio.ensure_future(waits[2])
        assert direct is waits[2], "an asyncio future already"
        assert direct.cancel()
        gathered.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gathered
        deadline = time.monotonic() + T
        while pending() != before:  # dropped by a runtime thread, soon after
            assert time.monotonic() < deadline, f"{pending() - before} Rust futures live on"
            await asyncio.sleep(0.001)
        assert not job.done, "cancelling a wait does not stop the job"
        job.abort()
        with pytest.raises(ovm.Aborted):
            await job.wait_async(timeout=T)

    asyncio.run(main())


def test_awaiting_a_finished_job_answers_at_once() -> None:
    bed = make_bed([("s", 8, 8192)])
    vm = bed.vm("v")
    bed.mgr.sim_inject(bed.servers[0], "start", fail=1)

    async def main() -> None:
        job = await vm.start_async()
        with pytest.raises(ovm.BackendError):
            await job.wait_async(timeout=T)
        # Done now: the awaitables are done when made, with the result or the error.
        again = job.wait_async(timeout=0)
        assert isinstance(again, asyncio.Future) and again.done()
        with pytest.raises(ovm.BackendError):
            await again
        ok = await (await vm.start_async()).wait_async(timeout=T)
        assert ok == bed.servers[0]

    asyncio.run(main())


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_event_loops_in_several_threads_get_their_own_results() -> None:
    # Results reach each loop through its own inbox, on its own thread.
    bed = make_bed([("s", 64, 65536)])
    errors: List[BaseException] = []

    def run(worker: int) -> None:
        async def main() -> None:
            me = threading.get_ident()
            creates = await asyncio.gather(
                *(bed.pool.create_vm_async(ovm.VmSpec(f"t{worker}-{i}", memory_mib=64)) for i in range(16))
            )
            vms = await asyncio.gather(*(j.wait_async(timeout=T) for j in creates))
            assert threading.get_ident() == me
            assert sorted(vm.info().name for vm in vms) == sorted(f"t{worker}-{i}" for i in range(16))

        try:
            asyncio.run(main())
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=T)
    assert not any(t.is_alive() for t in threads), "a loop never got its results"
    assert not errors, errors
    assert len(bed.mgr.vms()) == 64


def test_loops_come_and_go_without_leaking_descriptors() -> None:
    bed = make_bed([("s", 8, 8192)])
    vm = bed.vm("v")

    async def once() -> None:
        assert (await vm.explain_start_async()).chosen == bed.servers[0].id

    asyncio.run(once())  # the first loop of this thread
    gc.collect()
    before = _open_fds()
    for _ in range(50):
        asyncio.run(once())
    gc.collect()
    assert _open_fds() <= before + 1


def test_the_interpreter_exits_while_awaitables_are_pending() -> None:
    # Rust futures finishing after the interpreter began to exit touch no Python.
    script = textwrap.dedent(
        """
        import asyncio, ovm
        mgr = ovm.Manager.open_in_memory()
        pool = mgr.create_pool("p").wait(timeout=20)
        server = pool.add_server("s", "cpus=64,memory_mib=65536").wait(timeout=20)
        mgr.sim_inject(server, "start", delay=0.2)
        vms = [pool.create_vm(ovm.VmSpec(f"v{i}", memory_mib=64)).wait(timeout=20) for i in range(8)]

        async def main():
            jobs = await asyncio.gather(*(vm.start_async() for vm in vms))
            waits = [j.wait_async(timeout=20) for j in jobs]
            print("leaving", flush=True)
            return waits

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=T
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "leaving"


def test_awaitables_work_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")
    bed = make_bed([("s", 8, 8192)])

    async def main() -> ovm.ServerHandle:
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        vm = await (await bed.pool.create_vm_async(ovm.VmSpec("uv", memory_mib=64))).wait_async(timeout=T)
        return await (await vm.start_async()).wait_async(timeout=T)

    assert uvloop.run(main()) == bed.servers[0]


def test_a_loop_closed_with_awaitables_pending_is_freed() -> None:
    # A result arriving after its loop closed must not keep the loop alive.
    bed = make_bed([("s", 8, 8192)])
    vm = bed.vm("late")
    bed.mgr.sim_inject(bed.servers[0], "start", delay=0.3)
    loops: List["weakref.ReferenceType[asyncio.AbstractEventLoop]"] = []

    async def main() -> ovm.JobHandle[ovm.ServerHandle]:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        job = await vm.start_async()
        job.wait_async(timeout=T)  # still pending when the loop closes
        return job

    job = asyncio.run(main())
    job.wait(timeout=T)  # done: its result goes to the closed loop's inbox, and is dropped
    deadline = time.monotonic() + T
    while loops[0]() is not None:
        assert time.monotonic() < deadline, "the closed loop is still alive"
        # A runtime thread let go of the future without the GIL: the reference is
        # released at the next call into the native module.
        ovm._ovm._pending_awaitables()
        gc.collect()
        time.sleep(0.01)


def test_a_task_nobody_holds_still_gets_its_result() -> None:
    # The inbox holds the futures it will complete, as asyncio's own producers do: a
    # task awaiting one is not collected while it waits, even if nothing else holds it.
    bed = make_bed([("s", 8, 8192)])
    vm = bed.vm("fire-and-forget")
    bed.mgr.sim_inject(bed.servers[0], "start", delay=0.2)
    results: List[ovm.ServerHandle] = []

    async def start() -> None:
        job = await vm.start_async()
        results.append(await job.wait_async(timeout=T))

    async def main() -> None:
        asyncio.get_running_loop().create_task(start())  # deliberately not kept
        deadline = time.monotonic() + T
        while not results:
            assert time.monotonic() < deadline, "the task was lost"
            gc.collect()
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert results == [bed.servers[0]]


def test_a_loop_that_lost_its_reader_gets_a_new_one() -> None:
    # Removing every reader of a loop (a framework resetting it, say) closes its inbox;
    # the next awaitable registers a fresh one rather than waiting forever.
    bed = make_bed([("s", 8, 8192)])
    vm = bed.vm("again")

    async def main() -> None:
        assert (await vm.explain_start_async()).chosen == bed.servers[0].id
        loop = asyncio.get_running_loop()
        for key in list(loop._selector.get_map().values()):  # type: ignore[attr-defined]
            if key.fd != loop._ssock.fileno():  # type: ignore[attr-defined]
                loop.remove_reader(key.fd)
        gc.collect()
        explained = await asyncio.wait_for(vm.explain_start_async(), T)
        assert explained.chosen == bed.servers[0].id

    asyncio.run(main())
