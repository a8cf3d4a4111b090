"""The data classes: frozen, comparable, hashable, and plain data both ways."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone

import pytest

import ovm
from conftest import T, Bed


def test_specs_are_frozen_values() -> None:
    a = ovm.VmSpec("web", vcpus=2, memory_mib=1024, nics=[ovm.NicSpec("n")])
    b = ovm.VmSpec("web", vcpus=2, memory_mib=1024, nics=(ovm.NicSpec("n"),))
    assert a == b and hash(a) == hash(b)
    assert a.max_memory_mib == 1024 and a.nics == (ovm.NicSpec("n"),)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.vcpus = 4  # type: ignore[misc]
    assert dataclasses.replace(a, vcpus=4).vcpus == 4
    assert "VmSpec(name='web', vcpus=2" in repr(a)
    assert ovm.VmSpec("x", domain_type="hvm").domain_type is ovm.DomainType.HVM  # type: ignore[arg-type]


def test_to_dict_is_the_rust_serde_form(bed: Bed) -> None:
    vm = bed.vm("web")
    vm.start().wait(timeout=T)
    rec = vm.info()
    d = rec.to_dict()
    assert d["state"] == "running" and d["spec"]["boot"] == {"type": "test_guest", "cmdline": "idle"}
    assert json.loads(json.dumps(d)) == d, "JSON-compatible"
    assert ovm.Vm.from_dict(d) == rec
    for record in [*bed.mgr.servers(), *bed.mgr.pools(), *bed.mgr.jobs(), *bed.mgr.events()]:
        data = record.to_dict()
        assert json.loads(json.dumps(data)) == data
        assert type(record).from_dict(data) == record
    job = bed.mgr.jobs()[0]
    assert isinstance(job.created_at, datetime) and job.created_at.tzinfo is timezone.utc
    assert isinstance(job.to_dict()["created_at"], int)


def test_unknown_keys_are_ignored_and_defaults_fill_in() -> None:
    p = ovm.Progress.from_dict({"percent": 50, "steps_done": 1, "future_field": True})
    assert p == ovm.Progress(50.0, 1, 0) and isinstance(p.percent, float)
    boot = ovm.VmSpec.from_dict({"name": "k", "boot": {"type": "kernel", "kernel": "/boot/vmlinuz"}}).boot
    assert boot == ovm.KernelBoot("/boot/vmlinuz")
    with pytest.raises(ValueError):
        ovm.VmSpec.from_dict({"name": "k", "boot": {"type": "floppy"}})


def test_enums_are_their_names() -> None:
    assert ovm.VmState("running") is ovm.VmState.RUNNING
    assert ovm.VmState.RUNNING == "running"  # type: ignore[comparison-overlap]
    assert str(ovm.VmState.RUNNING) == "running"
    assert f"{ovm.JobState.ROLLED_BACK}" == "rolled_back"
    assert repr(ovm.VmState.PAUSED) == "VmState.PAUSED"
    assert ovm.VmState.PAUSED.is_active and not ovm.VmState.CRASHED.is_active
    assert ovm.JobState.FAILED.is_finished and not ovm.JobState.ROLLING_BACK.is_finished
