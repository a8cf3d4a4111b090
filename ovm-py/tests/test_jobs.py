"""Jobs: wait with and without a timeout, progress, abort, failure and rollback."""

from __future__ import annotations

import _thread
import dis
import math
import sys
import threading
import time
import types
from typing import List

import pytest

import ovm
from conftest import T, Bed


def test_wait_returns_the_result_and_the_record_tells_the_story(one: Bed) -> None:
    vm = one.vm("v")
    job = vm.start()
    assert job.kind == "vm.start" and job.description == "start vm v"
    assert job.wait(timeout=T) == one.servers[0]
    assert job.done and job.state is ovm.JobState.COMPLETED
    assert job.progress == ovm.Progress(100.0, 3, 3)
    rec = job.info()
    assert [s.name for s in rec.steps] == ["place", "define", "start"]
    assert all(s.state is ovm.StepState.DONE for s in rec.steps)
    assert rec.target == ("vm", vm.id) and rec.initiator == "test"
    assert rec.created_at is not None and rec.finished_at is not None
    assert rec.result == one.servers[0].id
    # A finished job answers at once, even with no time to wait.
    assert job.wait(timeout=0) == one.servers[0]
    assert one.mgr.job(job.id) == rec
    assert one.mgr.job(job.id[:8]).id == job.id
    # Newest first (jobs made in the same millisecond come in either order).
    jobs = one.mgr.jobs()
    created = [j.created_at for j in jobs]
    assert None not in created
    assert created == sorted((c for c in created if c is not None), reverse=True)
    assert job.id in {j.id for j in jobs if j.created_at == created[0]}


def test_a_timeout_raises_and_the_job_goes_on(one: Bed) -> None:
    vm = one.vm("slow")
    one.mgr.sim_inject(one.servers[0], "start", delay=0.6)
    job = vm.start()
    t0 = time.monotonic()
    with pytest.raises(ovm.TimeoutError) as e:
        job.wait(timeout=0.1)
    waited = time.monotonic() - t0
    assert 0.09 <= waited < 0.5
    assert isinstance(e.value, TimeoutError), "also the builtin TimeoutError"
    assert e.value.after == pytest.approx(0.1)
    assert job.id in e.value.what and "start vm slow" in e.value.what
    assert not job.done
    assert job.wait(timeout=T) == one.servers[0], "the timeout did not stop the job"
    assert vm.state() is ovm.VmState.RUNNING


def test_bad_timeouts_are_refused(one: Bed) -> None:
    job = one.vm("v").start()
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ovm.InvalidSpec) as e:
            job.wait(timeout=bad)
        assert e.value.field == "timeout"
    with pytest.raises(TypeError):
        job.wait(timeout="soon")  # type: ignore[arg-type]


def test_abort_mid_step_undoes_everything(one: Bed) -> None:
    vm = one.vm("slow", memory_mib=1024)
    one.mgr.sim_inject(one.servers[0], "start", delay=3600)
    job = vm.start()
    deadline = time.monotonic() + T
    while job.progress.steps_done < 2:  # inside the slow step
        assert time.monotonic() < deadline
        time.sleep(0.005)
    job.abort()
    with pytest.raises(ovm.Aborted) as e:
        job.wait(timeout=T)
    assert job.id in e.value.what
    assert job.state is ovm.JobState.ROLLED_BACK
    rec = job.info()
    assert [s.state for s in rec.steps[:2]] == [ovm.StepState.UNDONE] * 2
    assert ovm.StepState.DONE not in [s.state for s in rec.steps]
    assert vm.state() is ovm.VmState.STOPPED
    assert one.servers[0].vms() == []


def test_abort_by_id_through_the_manager(one: Bed) -> None:
    vm = one.vm("slow")
    one.mgr.sim_inject(one.servers[0], "start", delay=3600)
    job = vm.start()
    one.mgr.abort_job(job.id)
    with pytest.raises(ovm.Aborted):
        job.wait(timeout=T)
    with pytest.raises(ovm.NotFound):
        one.mgr.abort_job("00000000-0000-0000-0000-000000000000")


def test_a_failing_step_rolls_back_and_says_why(one: Bed) -> None:
    vm = one.vm("v")
    one.mgr.sim_inject(one.servers[0], "start", fail=1)
    job = vm.start()
    with pytest.raises(ovm.BackendError) as e:
        job.wait(timeout=T)
    assert e.value.backend == "sim" and "injected failure" in e.value.message
    rec = job.info()
    assert rec.state is ovm.JobState.ROLLED_BACK and rec.error and "injected failure" in rec.error
    assert vm.state() is ovm.VmState.STOPPED
    assert one.mgr.events(object_id=vm)[-1].outcome is ovm.Outcome.FAILURE
    # The fault is spent: the VM starts now.
    vm.start().wait(timeout=T)


def test_progress_updates_end_with_the_job(one: Bed) -> None:
    vm = one.vm("v")
    one.mgr.sim_inject(one.servers[0], "start", delay=0.2)
    job = vm.start()
    seen = list(job.progress_stream())
    assert seen, "at least the current progress"
    assert seen[-1] == ovm.Progress(100.0, 3, 3)
    percents = [p.percent for p in seen]
    assert percents == sorted(percents)
    assert job.done
    # A stream of a finished job gives its last progress and ends.
    assert list(job.progress_stream()) == [ovm.Progress(100.0, 3, 3)]


def _call_offset(code: types.CodeType) -> int:
    """The offset of the one call instruction in `code`."""
    calls = [i.offset for i in dis.get_instructions(code) if i.opname.startswith("CALL")]
    assert len(calls) == 1, calls
    return calls[0]


def test_ctrl_c_interrupts_a_wait(one: Bed) -> None:
    vm = one.vm("v")
    one.mgr.sim_inject(one.servers[0], "start", delay=3600)
    job = vm.start()

    def blocked_wait() -> object:
        return job.wait(timeout=10)  # never interrupted: TimeoutError, not a hang

    call_at = _call_offset(blocked_wait.__code__)
    main_id = threading.main_thread().ident
    assert main_id is not None
    pressed_at: List[float] = []

    def press_ctrl_c_once_blocked() -> None:
        # Inside the call of `job.wait` (its frame's last instruction is that call)
        # the main thread runs no Python code and gives the GIL back only where the wait
        # blocks, so this thread runs at all only while the wait is blocked: one press,
        # delivered there, and none left over to hit later code.
        deadline = time.monotonic() + T
        while time.monotonic() < deadline:
            frame = sys._current_frames().get(main_id)
            if frame is not None and frame.f_code is blocked_wait.__code__ and frame.f_lasti == call_at:
                time.sleep(0.05)  # blocked for a while, not only entered
                pressed_at.append(time.monotonic())
                _thread.interrupt_main()
                return
            time.sleep(0.001)

    presser = threading.Thread(target=press_ctrl_c_once_blocked)
    presser.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            blocked_wait()
        interrupted_at = time.monotonic()
    finally:
        presser.join()
    assert pressed_at, "the wait was never seen blocked"
    # Signals are looked at every 100 ms: the press ends the wait long before its 10 s
    # timeout (the margin is for a loaded machine).
    assert interrupted_at - pressed_at[0] < 2.0
    assert not job.done, "the interrupt ends the wait, not the job"
    job.abort()
    with pytest.raises(ovm.Aborted):
        job.wait(timeout=T)


def test_job_handles_compare_by_job(one: Bed) -> None:
    job = one.vm("v").start()
    same = job
    assert job == same and hash(job) == hash(same)
    assert job != one.vm("w").start()
    assert "start vm v" in repr(job)
    assert ovm.JobHandle[ovm.ServerHandle] is not None  # generic in annotations
