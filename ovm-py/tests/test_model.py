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


def test_data_classes_build_as_dataclasses_would() -> None:
    # Their __init__ is generated for speed (see _model._fast_init): same signature,
    # same defaults, the same normalisation, the same errors.
    import inspect

    params = inspect.signature(ovm.VmSpec).parameters
    assert list(params)[:3] == ["name", "vcpus", "memory_mib"]
    assert params["name"].default is inspect.Parameter.empty and params["vcpus"].default == 1
    spec = ovm.VmSpec("a", 2, 256, preferred_servers=["s1"], preferred_mode="manual")  # type: ignore[arg-type]
    assert spec.max_memory_mib == 256 and spec.preferred_servers == ("s1",)
    assert spec.preferred_mode is ovm.PreferredMode.MANUAL
    assert vars(spec) == {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    with pytest.raises(TypeError):
        ovm.VmSpec()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ovm.VmSpec("a", colour="red")  # type: ignore[call-arg]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "b"  # type: ignore[misc]
    assert ovm.Progress(50.0, 1, 2) == ovm.Progress(percent=50.0, steps_done=1, steps_total=2)


def test_a_spec_crosses_into_rust_field_for_field(one: Bed) -> None:
    # Specs whose fields are plain cross without to_dict() (see _model._DIRECT): every
    # field must arrive as sent, nested and tagged ones too.
    repo = one.pool.register_repository("sim", "r", "mem://r", create=True).wait(timeout=T)
    volume = one.mgr.create_volume(repo, "disk", 1 << 30).wait(timeout=T)
    net = one.pool.create_network("lan", [ovm.NetworkRole.VIRTUAL_MACHINE]).wait(timeout=T)
    spec = ovm.VmSpec(
        "rich",
        vcpus=2,
        memory_mib=768,
        max_memory_mib=1024,
        domain_type=ovm.DomainType.HVM,
        boot=ovm.KernelBoot("/boot/vmlinuz", initrd="/boot/initrd", cmdline="console=ttyS0"),
        disks=[ovm.DiskSpec(volume, read_only=True, device="xvdb")],
        nics=[ovm.NicSpec(net, mac="52:54:00:12:34:56")],
        ha_enabled=True,
        preferred_servers=[one.servers[0].id],
        preferred_mode=ovm.PreferredMode.MANUAL,
        start_priority=3,
        affinity_group="a",
        anti_affinity_group=None,
    )
    assert type(spec)._DIRECT is not None and ovm.KernelBoot._DIRECT is not None
    vm = one.pool.create_vm(spec).wait(timeout=T)
    assert vm.info().spec == spec
    assert one.pool.create_vm(spec.to_dict() | {"name": "from-dict"}).wait(timeout=T).info().spec == (
        dataclasses.replace(spec, name="from-dict")
    )


def test_the_package_exports_every_public_name_once() -> None:
    exported = ovm.__all__
    assert len(exported) == len(set(exported)), "a name is exported twice"
    for name in exported:
        assert hasattr(ovm, name), f"ovm.__all__ names {name}, which ovm lacks"
    for module in (ovm._model, ovm._errors):
        public = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and isinstance(value, type)
            and value.__module__ == module.__name__
        }
        unlisted = public - set(module.__all__)
        assert not unlisted, f"{module.__name__}.__all__ lacks {sorted(unlisted)}"
        missing = set(module.__all__) - set(exported)
        assert not missing, f"ovm does not export {sorted(missing)} of {module.__name__}"
