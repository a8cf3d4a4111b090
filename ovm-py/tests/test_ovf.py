"""OVF from Python: inspect a package, import it into a file-system repository as a
template, make a VM of it, export the template again, and refuse hostile packages
leaving everything as it was.

The package is written here by hand (descriptor text, a manifest, a disk made by
``qemu-img``), as a package from another tool would be.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

import ovm
from conftest import T

CAPACITY = 4 << 20

DESCRIPTOR = """<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
    xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References>
    <File ovf:id="file1" ovf:href="appliance-disk1.vmdk"/>
  </References>
  <DiskSection>
    <Info>Virtual disks</Info>
    <Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="{capacity}"
        ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>Networks</Info>
    <Network ovf:name="VM Network"><Description>guest traffic</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id="appliance">
    <Info>A test appliance</Info>
    <Name>appliance</Name>
    <VirtualHardwareSection>
      <Info>Virtual hardware</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemType>vmx-07</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:ElementName>2 virtual CPUs</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:ElementName>256 MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>256</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:ElementName>SCSI Controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>VM Network</rasd:Connection>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>E1000</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
""".format(capacity=CAPACITY)


def disk_bytes() -> bytes:
    """The disk's contents: a pattern over the first MiB, zeros after."""
    head = bytes((i * 7 + 1) & 0xFF for i in range(1 << 20))
    return head + bytes(CAPACITY - len(head))


def write_ova(dir: Path, name: str, *, corrupt_manifest: bool = False) -> Path:
    """An OVA of the appliance: descriptor first, then the manifest, then the disk."""
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        pytest.skip("qemu-img is not installed (scripts/deps installs qemu-utils)")
    raw = dir / "disk.raw"
    raw.write_bytes(disk_bytes())
    vmdk = dir / "appliance-disk1.vmdk"
    vmdk.unlink(missing_ok=True)
    subprocess.run(
        [qemu_img, "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", str(raw), str(vmdk)],
        check=True,
        timeout=T,
    )
    ovf = dir / "appliance.ovf"
    ovf.write_text(DESCRIPTOR)
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (ovf, vmdk)}
    if corrupt_manifest:
        digests[vmdk.name] = "0" * 64
    mf = dir / "appliance.mf"
    mf.write_text("".join(f"SHA256({n})= {d}\n" for n, d in digests.items()))
    ova = dir / name
    with tarfile.open(ova, "w", format=tarfile.USTAR_FORMAT) as tar:
        for p in (ovf, mf, vmdk):
            tar.add(p, arcname=p.name)
    return ova


Setup = Tuple[ovm.Manager, ovm.PoolHandle, str, Path]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    """A manager with a pool, a server, the network `VM Network` the package names, and
    an empty `fs` repository `images`."""
    mgr = ovm.Manager.open_in_memory(initiator="ovf-test")
    pool = mgr.create_pool("p").wait(timeout=T)
    pool.add_server("s", "cpus=16,memory_mib=16384").wait(timeout=T)
    pool.create_network("VM Network", [ovm.NetworkRole.VIRTUAL_MACHINE]).wait(timeout=T)
    repo = pool.register_repository("fs", "images", str(tmp_path / "repo"), create=True).wait(timeout=T)
    package_dir = tmp_path / "package"
    package_dir.mkdir()
    yield mgr, pool, repo, package_dir


def test_inspect_summarises_a_package(setup: Setup) -> None:
    _, _, _, dir = setup
    summary = ovm.inspect_ovf(write_ova(dir, "appliance.ova"))
    [system] = summary["virtual_systems"]
    assert system["cpus"] == 2 and system["memory_mib"] == 256
    assert system["disks"][0]["capacity_bytes"] == CAPACITY
    assert summary["is_collection"] is False


def test_import_deploy_and_export_round_trip(setup: Setup, tmp_path: Path) -> None:
    mgr, pool, repo, dir = setup
    job = mgr.import_ovf(write_ova(dir, "appliance.ova"), "images")
    summary = job.wait(timeout=T)
    assert isinstance(summary, ovm.ImportSummary)
    assert summary.templates == ("appliance",) and summary.assembly is None
    assert job.info().state is ovm.JobState.COMPLETED
    [template] = mgr.templates()
    assert template.name == "appliance" and template.repo == repo
    assert (template.spec.vcpus, template.spec.memory_mib) == (2, 256)
    assert len(template.volumes) == 1
    # The package's network is the manager's network of that name.
    [nic] = template.spec.nics
    assert [n.name for n in mgr.networks() if n.id == nic.network] == ["VM Network"]
    assert mgr.find_volume(repo, template.volumes[0]).size_bytes == CAPACITY

    vm = pool.create_vm_from_template("appliance", "app-1").wait(timeout=T)
    assert vm.info().spec.vcpus == 2 and len(vm.info().spec.disks) == 1
    vm.start().wait(timeout=T)
    assert vm.state() is ovm.VmState.RUNNING

    # Exported raw, the disk holds exactly what qemu-img packed: the import read it right.
    out = tmp_path / "out.ova"
    assert mgr.export_template("appliance", out, raw=True) == template
    with tarfile.open(out) as tar:
        names = tar.getnames()
        assert names[0].endswith(".ovf"), names
        [disk_name] = [n for n in names if not n.endswith((".ovf", ".mf"))]
        member = tar.extractfile(disk_name)
        assert member is not None
        assert member.read() == disk_bytes()
    with pytest.raises(ovm.OvmError):
        mgr.export_template("appliance", out)  # exists: never overwritten

    # The export imports again, under another name.
    again = mgr.import_ovf(out, "images", name="copy").wait(timeout=T)
    assert again.templates == ("copy",)
    assert sorted(t.name for t in mgr.templates()) == ["appliance", "copy"]


def test_import_async_reports_progress(setup: Setup) -> None:
    mgr, _, _, dir = setup
    ova = write_ova(dir, "appliance.ova")

    async def main() -> Tuple[ovm.ImportSummary, List[float]]:
        job = await mgr.import_ovf_async(ova, "images", name="async")
        seen = [p.percent async for p in job.progress_stream()]
        return await job.wait_async(timeout=T), seen

    summary, seen = asyncio.run(main())
    assert summary.templates == ("async",)
    assert seen and seen[-1] == 100.0 and seen == sorted(seen)


def test_refused_packages_leave_everything_as_it_was(setup: Setup) -> None:
    mgr, _, repo, dir = setup
    hostile = dir / "evil.ovf"
    hostile.write_text('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><Envelope/>')
    with pytest.raises(ovm.InvalidSpec) as e:
        ovm.inspect_ovf(hostile)
    assert "DOCTYPE" in str(e.value)
    with pytest.raises(ovm.InvalidSpec):
        mgr.import_ovf(hostile, "images").wait(timeout=T)

    # A disk whose digest is not the manifest's: refused once its bytes were read, and
    # the volume the import made for it is gone again.
    tampered = write_ova(dir, "tampered.ova", corrupt_manifest=True)
    job = mgr.import_ovf(tampered, "images")
    with pytest.raises(ovm.OvmError) as failed:
        job.wait(timeout=T)
    assert "appliance-disk1.vmdk" in str(failed.value)
    assert job.info().state is not ovm.JobState.COMPLETED
    assert mgr.templates() == [] and mgr.volumes(repo) == []

    with pytest.raises(ovm.NotFound):
        mgr.import_ovf(tampered, "no-such-repo")
    with pytest.raises(ovm.OvmError):
        mgr.import_ovf(dir / "missing.ova", "images").wait(timeout=T)
    assert mgr.templates() == [] and mgr.volumes(repo) == []


def test_import_makes_the_networks_the_pool_lacks(tmp_path: Path) -> None:
    mgr = ovm.Manager.open_in_memory(initiator="ovf-test")
    pool = mgr.create_pool("p").wait(timeout=T)
    server = pool.add_server("s", "cpus=16,memory_mib=16384").wait(timeout=T)
    pool.register_repository("fs", "images", str(tmp_path / "repo"), create=True).wait(timeout=T)
    (tmp_path / "package").mkdir()
    mgr.import_ovf(write_ova(tmp_path / "package", "appliance.ova"), "images").wait(timeout=T)
    [net] = mgr.networks()
    assert net.name == "VM Network" and ovm.NetworkRole.VIRTUAL_MACHINE in net.roles
    assert net.id in server.info().networks, "made on the pool's servers, as create_network does"
    vm = pool.create_vm_from_template("appliance", "app").wait(timeout=T)
    assert vm.start().wait(timeout=T) == server
