"""The same lifecycle on KVM, where this machine and this build have it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ovm
from conftest import T

KVM = "kvm" in ovm.available_backends()


@pytest.mark.skipif(not KVM, reason="KVM backend not available here (see ovm.available_backends())")
def test_lifecycle_on_kvm() -> None:
    mgr = ovm.Manager.open_in_memory(backends=["kvm"], initiator="test")
    pool = mgr.create_pool("kvm").wait(timeout=T)
    server = pool.add_server("local", "local", hypervisor="kvm").wait(timeout=T)
    assert server.info().hypervisor is ovm.HypervisorKind.KVM
    spec = ovm.VmSpec("guest", vcpus=1, memory_mib=32, boot=ovm.TestGuestBoot("kv"))
    vm = pool.create_vm(spec).wait(timeout=T)
    assert vm.start().wait(timeout=60) == server
    assert vm.state() is ovm.VmState.RUNNING
    # A real guest: it boots, says so on its console and answers guest messages.
    deadline = time.monotonic() + T
    while b"ready" not in vm.console():
        assert time.monotonic() < deadline, vm.console()
        time.sleep(0.02)
    vm.send_message("greeting", b"hello from python")
    reply = None
    while reply is None and time.monotonic() < deadline:
        reply = vm.read_message("greeting")
        time.sleep(0.02)
    assert reply is not None and reply.endswith(b"hello from python")
    vm.pause().wait(timeout=T)
    assert vm.state() is ovm.VmState.PAUSED
    vm.resume().wait(timeout=T)
    vm.stop().wait(timeout=60)
    assert vm.state() is ovm.VmState.STOPPED


@pytest.mark.skipif(not KVM, reason="KVM backend not available here (see ovm.available_backends())")
def test_remote_kvm_servers_need_the_agent() -> None:
    mgr = ovm.Manager.open_in_memory(backends=["sim", "kvm"])
    pool = mgr.create_pool("kvm").wait(timeout=T)
    with pytest.raises(ovm.Unsupported) as e:
        pool.add_server("far", "10.0.0.9", hypervisor="kvm").wait(timeout=T)
    assert "agent" in str(e.value)


def test_asking_for_kvm_where_it_is_missing_says_why() -> None:
    if KVM:
        pytest.skip("KVM is available here")
    with pytest.raises(ovm.Unsupported) as e:
        ovm.Manager.open_in_memory(backends="kvm")
    assert "kvm" in str(e.value)


def _kill_vmms_under(directory: str) -> None:
    """Kills any VMM process whose command line names `directory` (a failed test must not
    leave VMs running)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if directory.encode() in cmdline and int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass


@pytest.mark.skipif(not KVM, reason="KVM backend not available here (see ovm.available_backends())")
def test_kvm_vms_on_a_file_store_outlive_the_process_that_started_them(tmp_path: Path) -> None:
    db = str(tmp_path / "ovm.db")
    starter = f"""
import ovm
mgr = ovm.Manager.open({db!r}, backends=["kvm"], initiator="starter")
pool = mgr.create_pool("kvm").wait(timeout=30)
pool.add_server("local", "local", hypervisor="kvm").wait(timeout=30)
spec = ovm.VmSpec("guest", vcpus=1, memory_mib=32, boot=ovm.TestGuestBoot("kv"))
vm = pool.create_vm(spec).wait(timeout=30)
vm.start().wait(timeout=60)
"""
    try:
        subprocess.run([sys.executable, "-c", starter], check=True, timeout=120)
        # Another process (this one) finds the VM running and acts on it.
        mgr = ovm.Manager.open(db, backends=["kvm"], initiator="test")
        vm = mgr.vm("guest")
        assert vm.state() is ovm.VmState.RUNNING
        vm.send_message("greeting", b"still here")
        deadline = time.monotonic() + T
        reply = None
        while reply is None and time.monotonic() < deadline:
            reply = vm.read_message("greeting")
            time.sleep(0.02)
        assert reply is not None and reply.endswith(b"still here")
        vm.stop().wait(timeout=60)
        assert vm.state() is ovm.VmState.STOPPED
    finally:
        _kill_vmms_under(str(tmp_path))
