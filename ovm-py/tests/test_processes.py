"""Python processes and this one on one store file: the store, not any process's memory,
decides. Parallel starts of one VM run it once; names stay unique; an open manager sees
what another process did without being told."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import List

import ovm
from conftest import T

#: A child process: opens the store, runs one operation, prints `ok` or the error's class.
CHILD = r"""
import sys
import ovm
db, op, name = sys.argv[1:4]
mgr = ovm.Manager.open(db, initiator="child")
try:
    if op == "start":
        mgr.vm(name).start().wait(timeout=60)
    elif op == "create":
        mgr.pool("p").create_vm(ovm.VmSpec(name, vcpus=1, memory_mib=64)).wait(timeout=60)
    print("ok")
except ovm.OvmError as e:
    print(e, file=sys.stderr)
    print(type(e).__name__)
finally:
    mgr.close()
"""


def children(db: Path, op: str, names: List[str]) -> List[str]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db), op, n],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in names
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(out.strip())
    return outs


def store(tmp_path: Path) -> ovm.Manager:
    mgr = ovm.Manager.open(tmp_path / "ovm.db", initiator="test")
    pool = mgr.create_pool("p").wait(timeout=T)
    pool.add_server("a", "cpus=4,memory_mib=4096").wait(timeout=T)
    pool.add_server("b", "cpus=4,memory_mib=4096").wait(timeout=T)
    return mgr


def test_parallel_starts_in_processes_run_the_vm_once(tmp_path: Path) -> None:
    mgr = store(tmp_path)
    vm = mgr.pool("p").create_vm(ovm.VmSpec("v", vcpus=1, memory_mib=64)).wait(timeout=T)
    for _ in range(3):
        outs = children(tmp_path / "ovm.db", "start", ["v"] * 4)
        assert sorted(outs) == ["InvalidState"] * 3 + ["ok"], outs
        mgr.refresh()
        assert vm.state() is ovm.VmState.RUNNING
        running = [s for s in mgr.servers() if vm.id in {v.id for v in mgr.server(s.id).vms()}]
        assert len(running) == 1
        vm.kill().wait(timeout=T)
    mgr.close()


def test_parallel_creates_of_one_name_in_processes_make_one_vm(tmp_path: Path) -> None:
    mgr = store(tmp_path)
    outs = children(tmp_path / "ovm.db", "create", ["same"] * 6)
    assert sorted(outs) == ["AlreadyExists"] * 5 + ["ok"], outs
    outs = children(tmp_path / "ovm.db", "create", [f"n{i}" for i in range(6)])
    assert outs == ["ok"] * 6
    mgr.refresh()
    names = [v.name for v in mgr.vms()]
    assert names == sorted(["same"] + [f"n{i}" for i in range(6)])
    mgr.close()


def test_an_open_manager_sees_another_process_start_a_vm(tmp_path: Path) -> None:
    mgr = store(tmp_path)
    vm = mgr.pool("p").create_vm(ovm.VmSpec("v", vcpus=1, memory_mib=64)).wait(timeout=T)
    assert children(tmp_path / "ovm.db", "start", ["v"]) == ["ok"]
    # Without refresh(): the manager follows the store's change feed by itself.
    deadline = time.monotonic() + 1.0
    while vm.state() is not ovm.VmState.RUNNING:
        assert time.monotonic() < deadline, "seen within 1 s"
        time.sleep(0.02)
    # What it now knows, it acts on: the stop is not refused as `stopped`.
    vm.stop().wait(timeout=T)
    assert vm.state() is ovm.VmState.STOPPED
    mgr.close()
