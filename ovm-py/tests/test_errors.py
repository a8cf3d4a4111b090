"""Exceptions: one base, a class per Rust error variant, structured fields."""

from __future__ import annotations

import builtins
import pickle
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import pytest

import ovm
from conftest import T, Bed, make_bed


def test_the_hierarchy() -> None:
    classes = [
        ovm.NotFound, ovm.AlreadyExists, ovm.Conflict, ovm.InvalidSpec, ovm.InvalidState,
        ovm.Capacity, ovm.Unsupported, ovm.BackendError, ovm.TimeoutError, ovm.Aborted,
    ]
    assert all(issubclass(c, ovm.OvmError) for c in classes)
    assert len({c.code for c in classes}) == len(classes)
    assert issubclass(ovm.NotFound, LookupError)
    assert issubclass(ovm.InvalidSpec, ValueError)
    assert issubclass(ovm.TimeoutError, builtins.TimeoutError)
    assert ovm.Timeout is ovm.TimeoutError
    assert not issubclass(ovm.OvmError, ValueError)


def test_exceptions_carry_fields_and_survive_pickling() -> None:
    e = ovm.Conflict("conflict on vm x", kind="vm", id="x", expected=1, found=2)
    assert (e.kind, e.id, e.expected, e.found) == ("vm", "x", 1, 2)
    assert e.to_dict() == {
        "code": "conflict", "message": "conflict on vm x",
        "kind": "vm", "id": "x", "expected": 1, "found": 2,
    }
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is ovm.Conflict and back.to_dict() == e.to_dict()
    t = pickle.loads(pickle.dumps(ovm.TimeoutError("late", what="job", after=1.5)))
    assert (t.what, t.after, str(t)) == ("job", 1.5, "late")
    with pytest.raises(TypeError):
        ovm.NotFound("x", colour="red")


def test_not_found(bed: Bed) -> None:
    with pytest.raises(ovm.NotFound) as e:
        bed.mgr.vm("nope")
    assert (e.value.kind, e.value.id, e.value.code) == ("vm", "nope", "not_found")
    assert str(e.value) == "vm nope not found"
    with pytest.raises(LookupError):
        bed.mgr.find_pool("nope")
    with pytest.raises(ovm.NotFound):
        bed.mgr.job("nope")


def test_invalid_spec_names_the_field(bed: Bed) -> None:
    cases: List[Tuple[Union[ovm.VmSpec, Dict[str, Any]], str]] = [
        (ovm.VmSpec("x", vcpus=0), "vm.vcpus"),
        (ovm.VmSpec("x", memory_mib=0), "vm.memory_mib"),
        (ovm.VmSpec("x", memory_mib=1024, max_memory_mib=512), "vm.max_memory_mib"),
        (ovm.VmSpec("a/b"), "vm.name"),
        (ovm.VmSpec("x", vcpus=-1), "vm.vcpus"),
        ({"name": "x", "vcpus": "two"}, "vm.vcpus"),
        (ovm.VmSpec("x", preferred_mode=ovm.PreferredMode.MANUAL), "vm.preferred_servers"),
        (ovm.VmSpec("x", nics=[ovm.NicSpec("00000000-0000-0000-0000-000000000001", mac="zz")]), "vm.nics[0].mac"),
    ]
    for spec, field in cases:
        with pytest.raises(ovm.InvalidSpec) as e:
            bed.pool.create_vm(spec)
        assert e.value.field == field, (spec, e.value)
        assert isinstance(e.value, ValueError)
    with pytest.raises(ovm.InvalidSpec) as e:
        bed.pool.add_server("x", hypervisor="vmware")
    assert e.value.field == "server.hypervisor"
    with pytest.raises(ovm.InvalidSpec):
        bed.mgr.create_pool("", max_servers=3)
    with pytest.raises(ovm.InvalidSpec) as e:
        bed.mgr.sim_inject(bed.servers[0], "start", delay=-1)
    assert e.value.field == "delay"


def test_wrong_python_types_are_type_errors(bed: Bed) -> None:
    with pytest.raises(TypeError):
        bed.pool.create_vm(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        bed.mgr.events(object_id=3.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        bed.pool.create_vm({"name": "x", "disks": [object()]})  # not data


def test_already_exists_invalid_state_capacity(bed: Bed) -> None:
    vm = bed.vm("dup")
    with pytest.raises(ovm.AlreadyExists) as e:
        bed.pool.create_vm(ovm.VmSpec("dup")).wait(timeout=T)
    assert (e.value.kind, e.value.id) == ("vm", "dup")
    vm.start().wait(timeout=T)
    with pytest.raises(ovm.InvalidState) as s:
        vm.delete()
    assert (s.value.kind, s.value.state, s.value.op) == ("vm", "running", "delete")
    huge = bed.vm("huge", vcpus=2, memory_mib=1 << 20)
    job = huge.start()
    with pytest.raises(ovm.Capacity) as c:
        job.wait(timeout=T)
    assert "memory" in c.value.reason
    assert job.state is ovm.JobState.ROLLED_BACK
    assert huge.info().server is None


def test_unsupported() -> None:
    bed = make_bed([("s", 2, 2048)])
    with pytest.raises(ovm.Unsupported) as e:
        bed.pool.add_server("x", "somewhere", hypervisor="xen").wait(timeout=T)
    assert e.value.backend == "manager" and "xen" in e.value.op
    assert bed.mgr.servers()[0].name == "s", "nothing half-added"


def test_stale_writers_see_the_truth(tmp_path: Path) -> None:
    db = tmp_path / "ovm.db"
    a = ovm.Manager.open(db)
    pool = a.create_pool("p").wait(timeout=T)
    pool.add_server("s", "cpus=4,memory_mib=4096").wait(timeout=T)
    pool.create_vm(ovm.VmSpec("v")).wait(timeout=T)
    b = ovm.Manager.open(db)
    a.vm("v").delete().wait(timeout=T)
    job = b.vm("v").start()
    with pytest.raises(ovm.NotFound):
        job.wait(timeout=T)
    assert job.state is ovm.JobState.ROLLED_BACK
