"""DRS and DPM from Python: proposals, one pass on demand, server power, the scheduler."""

from __future__ import annotations

import asyncio
import time

import pytest

import ovm
from conftest import T


def drs_bed() -> tuple[ovm.Manager, ovm.PoolHandle, ovm.ServerHandle, ovm.ServerHandle]:
    """Four VMs on `busy` (75 % of its memory) while `idle` was in maintenance."""
    mgr = ovm.Manager.open_in_memory(initiator="test")
    drs = ovm.DrsSettings(enabled=True, threshold_pct=50.0, hold_secs=0, max_moves=8)
    pool = mgr.create_pool("p", policies=ovm.PoolPolicies(drs=drs)).wait(timeout=T)
    busy = pool.add_server("busy", "cpus=8,memory_mib=8192").wait(timeout=T)
    idle = pool.add_server("idle", "cpus=8,memory_mib=8192").wait(timeout=T)
    idle.set_maintenance(True).wait(timeout=T)
    for i in range(4):
        vm = pool.create_vm(ovm.VmSpec(f"v{i}", vcpus=1, memory_mib=1536)).wait(timeout=T)
        assert vm.start().wait(timeout=T) == busy
    idle.set_maintenance(False).wait(timeout=T)
    return mgr, pool, busy, idle


def test_drs_proposes_and_rebalances() -> None:
    mgr, pool, busy, idle = drs_bed()
    proposed = pool.propose_rebalance()
    assert proposed, "a busy and an idle server: something to move"
    for m in proposed:
        assert isinstance(m, ovm.Migration) and m.reason
        assert (m.from_, m.to) == (busy.id, idle.id)
        assert ovm.Migration.from_dict(m.to_dict()) == m and m.to_dict()["from"] == busy.id
    # Proposing changes nothing.
    assert len(busy.vms()) == 4 and pool.propose_rebalance() == proposed

    report = pool.rebalance()
    assert isinstance(report, ovm.ScheduleReport) and report.errors == ()
    assert [m.vm for m in report.migrated] == [m.vm for m in proposed]
    assert len(idle.vms()) == len(proposed) and len(busy.vms()) == 4 - len(proposed)
    assert pool.propose_rebalance() == [], "balanced now"

    async def rebalance_again() -> ovm.ScheduleReport:
        return await pool.rebalance_async()

    assert asyncio.run(rebalance_again()) == ovm.ScheduleReport()
    assert any(e.action == "vm.migrate" for e in mgr.events())


def test_dpm_powers_off_an_idle_server_and_on_again() -> None:
    mgr = ovm.Manager.open_in_memory(initiator="test")
    dpm = ovm.DpmSettings(enabled=True, low_pct=45.0, high_pct=81.0, min_servers=1)
    pool = mgr.create_pool("p", policies=ovm.PoolPolicies(dpm=dpm)).wait(timeout=T)
    a = pool.add_server("a", "cpus=8,memory_mib=8192").wait(timeout=T)
    b = pool.add_server("b", "cpus=8,memory_mib=8192").wait(timeout=T)

    proposed = pool.propose_power()
    assert len(proposed) == 1
    (off,) = proposed
    assert isinstance(off, ovm.PowerOff) and off.server in (a.id, b.id) and off.reason
    assert off.to_dict()["action"] == "power_off" and off.evacuate == ()

    report = pool.apply_power()
    assert report.powered_off == (off.server,) and report.errors == ()
    powered_off = mgr.server(off.server)
    assert powered_off.info().state is ovm.ServerState.POWERED_OFF
    assert pool.propose_power() == [], "one server left: the minimum"

    powered_off.set_power(True, reason="maintenance window over")
    assert powered_off.info().state is ovm.ServerState.RUNNING
    last = mgr.events(object_id=powered_off)[-1]
    assert last.action == "server.power_on" and "maintenance window over" in last.detail


def test_a_server_running_vms_is_not_powered_off() -> None:
    mgr = ovm.Manager.open_in_memory(initiator="test")
    pool = mgr.create_pool("p").wait(timeout=T)
    s = pool.add_server("s", "cpus=8,memory_mib=8192").wait(timeout=T)
    pool.create_vm(ovm.VmSpec("v", memory_mib=512)).wait(timeout=T).start().wait(timeout=T)
    with pytest.raises(ovm.InvalidState) as e:
        s.set_power(False)
    assert e.value.op == "power off"

    async def power_off_async() -> None:
        await s.set_power_async(False)

    with pytest.raises(ovm.InvalidState):
        asyncio.run(power_off_async())
    assert s.info().state is ovm.ServerState.RUNNING


def test_the_scheduler_runs_until_stopped() -> None:
    mgr, pool, busy, idle = drs_bed()
    scheduler = mgr.spawn_scheduler()
    assert scheduler.running and "running" in repr(scheduler)
    deadline = time.monotonic() + T
    while not idle.vms():  # its first pass comes after a second
        assert time.monotonic() < deadline, "the scheduler never rebalanced"
        time.sleep(0.05)
    scheduler.stop()
    deadline = time.monotonic() + T
    while scheduler.running:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert "stopped" in repr(scheduler)
