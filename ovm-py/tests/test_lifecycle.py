"""VM lifecycle on the simulator through the Python API, and what it leaves in the records."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import ovm
from conftest import T, Bed, make_bed


def test_lifecycle_and_history(bed: Bed) -> None:
    vm = bed.vm("web", vcpus=2, memory_mib=2048)
    assert vm.state() is ovm.VmState.STOPPED
    server = vm.start().wait(timeout=T)
    assert isinstance(server, ovm.ServerHandle)
    assert server.info().name == "big", "best fit: the server with most room"
    assert vm.state() == ovm.VmState.RUNNING == "running"  # type: ignore[comparison-overlap]
    assert [v.name for v in server.vms()] == ["web"]
    assert vm.info().server == server.id

    vm.pause().wait(timeout=T)
    assert vm.state() is ovm.VmState.PAUSED
    vm.resume().wait(timeout=T)
    vm.stop().wait(timeout=T)
    assert vm.state() is ovm.VmState.STOPPED
    vm.start().wait(timeout=T)
    vm.kill().wait(timeout=T)
    vm.delete().wait(timeout=T)
    with pytest.raises(ovm.NotFound):
        vm.state()
    with pytest.raises(ovm.NotFound):
        bed.mgr.find_vm("web")

    events = bed.mgr.events(object_id=vm)
    assert [e.action for e in events] == [
        "vm.create", "vm.start", "vm.pause", "vm.resume",
        "vm.stop", "vm.start", "vm.kill", "vm.delete",
    ]
    assert all(e.initiator == "test" and e.outcome is ovm.Outcome.SUCCESS for e in events)
    assert all(e.job is not None for e in events)
    assert bed.mgr.events(object_id=vm.id, limit=2) == events[-2:]


def test_records_list_and_find(bed: Bed) -> None:
    web = bed.vm("web")
    bed.vm("db")
    assert [v.name for v in bed.mgr.vms()] == ["db", "web"]
    assert [s.name for s in bed.mgr.servers()] == ["big", "small"]
    assert [p.name for p in bed.mgr.pools()] == ["p"]
    assert bed.pool.info().servers == tuple(s.id for s in bed.servers)
    assert {v.name for v in bed.pool.vms()} == {"db", "web"}
    rec = bed.mgr.find_vm("web")
    assert rec == bed.mgr.find_vm(web.id) == web.info()
    assert rec.pool == bed.pool.id and rec.spec.vcpus == 1
    assert bed.mgr.vm("web") == web and hash(bed.mgr.vm(web.id)) == hash(web)
    assert bed.mgr.pool("p") == bed.pool
    assert bed.mgr.server("big") == bed.servers[1]
    small = bed.mgr.find_server("small")
    assert (small.cpus, small.memory_mib, small.hypervisor) == (4, 4096, ovm.HypervisorKind.SIM)
    assert small.roles == frozenset({ovm.ServerRole.VM_SERVER})
    assert "web" in repr(web) and "stopped" in repr(web)


def test_explain_migrate_and_maintenance() -> None:
    bed = make_bed([("a", 8, 8192), ("b", 8, 8192)])
    a, b = bed.servers
    a.set_maintenance(True).wait(timeout=T)
    assert a.info().state is ovm.ServerState.MAINTENANCE
    vm = bed.vm("v", memory_mib=1024)
    why = vm.explain_start()
    assert why.chosen == b.id
    verdicts = {v.name: v.verdict for v in why.servers}
    assert isinstance(verdicts["a"], ovm.Rejected) and "maintenance" in verdicts["a"].reason
    assert isinstance(verdicts["b"], ovm.Scored)
    assert vm.start().wait(timeout=T) == b
    a.set_maintenance(False).wait(timeout=T)
    assert vm.migrate().wait(timeout=T) == a
    assert vm.migrate(to="b").wait(timeout=T) == b
    assert vm.migrate(to=a).wait(timeout=T) == a
    assert bed.mgr.find_vm("v").last_moved is not None
    with pytest.raises(ovm.InvalidState):
        a.remove().wait(timeout=T)


def test_guest_messages_and_console(one: Bed) -> None:
    a, b = one.vm("a"), one.vm("b")
    for vm in (a, b):
        vm.start().wait(timeout=T)
    # The simulated guest answers like the KVM test guest: "echo:" + value, same key.
    a.send_message("secret", b"42")
    assert a.read_message("secret") == b"echo:42"
    assert b.read_message("secret") is None, "a VM sees only its own keys"
    a.send_message("text", "héllo")
    assert a.read_message("text") == "echo:héllo".encode()
    with pytest.raises(ovm.InvalidSpec):
        a.send_message("k" * 257, b"v")
    assert isinstance(a.console(), bytes)
    a.stop().wait(timeout=T)
    with pytest.raises(ovm.InvalidState):
        a.send_message("k", b"v")


def test_repositories_and_volumes(one: Bed) -> None:
    plugins = {p.name: p for p in one.mgr.storage_plugins()}
    assert "sim" in plugins and plugins["sim"].capabilities.thin_provisioning
    repo = one.pool.register_repository("sim", "images", "mem://images", create=True).wait(timeout=T)
    assert one.mgr.find_repository("images").id == repo
    assert one.pool.info().repositories == (repo,)
    vol = one.mgr.create_volume("images", "disk0", 1 << 30).wait(timeout=T)
    clone = one.mgr.clone_volume("images", "disk0", "disk1").wait(timeout=T)
    one.mgr.resize_volume("images", "disk1", 2 << 30).wait(timeout=T)
    vols = {v.name: v for v in one.mgr.volumes("images")}
    assert vols["disk0"].id == vol and vols["disk1"].id == clone
    assert vols["disk1"].size_bytes == 2 << 30 and vols["disk1"].parent == vol
    assert vols["disk0"].format is ovm.VolumeFormat.RAW
    spec = ovm.VmSpec("with-disk", disks=[ovm.DiskSpec(vol)])
    vm = one.pool.create_vm(spec).wait(timeout=T)
    with pytest.raises(ovm.InvalidState):
        one.mgr.delete_volume("images", "disk0")
    vm.delete().wait(timeout=T)
    one.mgr.delete_volume("images", "disk0").wait(timeout=T)
    assert [v.name for v in one.mgr.volumes("images")] == ["disk1"]
    with pytest.raises(ovm.NotFound):
        one.mgr.find_volume("images", "disk0")


def test_networks(one: Bed) -> None:
    net = one.pool.create_network("vmnet", [ovm.NetworkRole.VIRTUAL_MACHINE], vlan=42).wait(timeout=T)
    (rec,) = one.mgr.networks()
    assert (rec.id, rec.name, rec.vlan) == (net, "vmnet", 42)
    assert rec.roles == frozenset({ovm.NetworkRole.VIRTUAL_MACHINE})
    vm = one.pool.create_vm(ovm.VmSpec("n", nics=[ovm.NicSpec(net)])).wait(timeout=T)
    vm.start().wait(timeout=T)
    with pytest.raises(ovm.InvalidSpec) as e:
        one.pool.create_network("bad", ["storage"], vlan=5000)
    assert e.value.field == "network.vlan"


def test_a_file_store_outlives_its_manager(tmp_path: Path) -> None:
    db = tmp_path / "ovm.db"
    mgr = ovm.Manager.open(db, initiator="first")
    pool = mgr.create_pool("p").wait(timeout=T)
    pool.add_server("s", "cpus=4,memory_mib=4096").wait(timeout=T)
    vm = pool.create_vm(ovm.VmSpec("keep")).wait(timeout=T)
    vm.start().wait(timeout=T)
    assert mgr.path == db
    # Simulated hosts live beside the store, where the `ovm` CLI looks for them.
    assert (tmp_path / "sim").is_dir() and os.listdir(tmp_path / "sim")

    again = ovm.Manager.open(str(db), initiator="second")
    assert again.find_vm("keep").state is ovm.VmState.RUNNING
    again.vm("keep").stop().wait(timeout=T)
    assert [j.initiator for j in again.jobs()][:1] == ["second"]
    by_url = ovm.Manager.open(f"sqlite://{db}")
    assert by_url.path == db and by_url.find_vm("keep").state is ovm.VmState.STOPPED
    assert ovm.Manager.open("sqlite://:memory:").path is None


def test_backends_are_named() -> None:
    assert "sim" in ovm.available_backends()
    mgr = ovm.Manager.open_in_memory(backends="sim")
    assert mgr.backends == ["sim"]
    with pytest.raises(ovm.Unsupported) as e:
        ovm.Manager.open_in_memory(backends=["sim", "vmware"])
    assert "vmware" in str(e.value) and "sim, kvm, xen" in str(e.value)


def test_xen_is_offered_exactly_where_a_dom0_is() -> None:
    # The same builder as the CLI's: Xen where /proc/xen says this is dom0.
    try:
        dom0 = "control_d" in open("/proc/xen/capabilities").read()
    except OSError:
        dom0 = False
    assert ("xen" in ovm.available_backends()) == dom0
    if dom0:
        assert "xen" in ovm.Manager.open_in_memory(backends=["sim", "xen"]).backends
    else:
        with pytest.raises(ovm.Unsupported) as e:
            ovm.Manager.open_in_memory(backends=["sim", "xen"])
        assert "xen servers" in str(e.value) and "dom0" in str(e.value)


def test_templates_without_any(one: Bed) -> None:
    # Templates come from OVF imports (the `ovm ovf import` command); none here yet.
    assert one.mgr.templates() == [] and one.mgr.assemblies() == []
    with pytest.raises(ovm.NotFound) as e:
        one.mgr.find_template("base")
    assert e.value.kind == "template"
    with pytest.raises(ovm.NotFound):
        one.pool.create_vm_from_template("base", "from-base")
    t = ovm.Template.from_dict(
        {"id": "t", "name": "base", "repo": "r", "spec": ovm.VmSpec("base").to_dict(), "volumes": ["v"]}
    )
    assert t.volumes == ("v",) and ovm.Template.from_dict(t.to_dict()) == t
