"""The same lifecycle on KVM, where this machine and this build have it."""

from __future__ import annotations

import pytest

import ovm
from conftest import T

KVM = "kvm" in ovm.available_backends()


@pytest.mark.skipif(not KVM, reason="KVM backend not available here (see ovm.available_backends())")
def test_lifecycle_on_kvm() -> None:
    mgr = ovm.Manager.open_in_memory(backends=["kvm"], initiator="test")
    pool = mgr.create_pool("kvm").wait(timeout=T)
    server = pool.add_server("local", "local", hypervisor="kvm").wait(timeout=T)
    vm = pool.create_vm(ovm.VmSpec("guest", vcpus=1, memory_mib=64)).wait(timeout=T)
    assert vm.start().wait(timeout=60) == server
    assert vm.state() is ovm.VmState.RUNNING
    vm.pause().wait(timeout=T)
    vm.resume().wait(timeout=T)
    vm.stop().wait(timeout=60)
    assert vm.state() is ovm.VmState.STOPPED


def test_asking_for_kvm_where_it_is_missing_says_why() -> None:
    if KVM:
        pytest.skip("KVM is available here")
    with pytest.raises(ovm.Unsupported) as e:
        ovm.Manager.open_in_memory(backends="kvm")
    assert "kvm" in str(e.value)
