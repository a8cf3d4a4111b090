//! `VmConfig` (what the manager asks for) → `VmmConfig` (what `ovm-vmm` builds): the
//! checks of what this backend can run, in one place, done at `define` so that a VM
//! this backend cannot run is refused before anything is started.

use std::path::PathBuf;

use ovm_core::hypervisor::VmConfig;
use ovm_core::model::{BootSource, DomainType, VolumeFormat};
use ovm_core::{Error, Result, VolumeAccess};

use super::BACKEND;
use crate::vmm::{BootConfig, DiskConfig, VmmConfig};

/// What the host's backend runs: the limits a config is checked against.
pub(super) struct Limits<'a> {
    /// Domain types the backend boots.
    pub domain_types: &'a [DomainType],
    /// Most vCPUs per VM.
    pub max_vcpus: u32,
}

/// The VMM config for `config`, with its console log at `console_log`; an error if the
/// backend cannot run it.
pub(super) fn vmm_config(
    config: &VmConfig,
    limits: &Limits<'_>,
    console_log: PathBuf,
) -> Result<VmmConfig> {
    let spec = &config.spec;
    spec.validate()?;
    if !limits.domain_types.contains(&spec.domain_type) {
        return Err(Error::unsupported(
            format!("domain type {}", spec.domain_type.as_str()),
            BACKEND,
        ));
    }
    if spec.vcpus > limits.max_vcpus {
        return Err(Error::invalid(
            "vm.vcpus",
            format!(
                "{} is more than the {} this host's KVM backend runs",
                spec.vcpus, limits.max_vcpus
            ),
        ));
    }
    if !config.nics.is_empty() || !spec.nics.is_empty() {
        return Err(Error::unsupported("network interfaces", BACKEND));
    }
    let boot = match &spec.boot {
        BootSource::TestGuest { cmdline } => BootConfig::Kernel {
            kernel: crate::guest::test_guest_path()?,
            initrd: None,
            cmdline: cmdline.clone(),
        },
        BootSource::Kernel {
            kernel,
            initrd,
            cmdline,
        } => BootConfig::Kernel {
            kernel: kernel.clone(),
            initrd: initrd.clone(),
            cmdline: cmdline.clone(),
        },
        BootSource::Disk => return Err(Error::unsupported("booting from disk", BACKEND)),
    };
    let disks = config
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| match &d.access {
            VolumeAccess::Path {
                path,
                format: VolumeFormat::Raw,
            } => Ok(DiskConfig {
                path: path.clone(),
                read_only: d.read_only,
            }),
            other => Err(Error::unsupported(
                format!("disk {i} access {other:?} (raw files only)"),
                BACKEND,
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(VmmConfig {
        vcpus: spec.vcpus as u8,
        memory_mib: spec.memory_mib,
        boot,
        console_log: Some(console_log),
        disks,
        prefer_pvh: false,
    })
}

#[cfg(test)]
mod tests {
    use ovm_core::VmId;
    use ovm_core::hypervisor::{DiskAttachment, NicAttachment};
    use ovm_core::model::VmSpec;

    use super::*;

    const LIMITS: Limits<'static> = Limits {
        domain_types: &[DomainType::Pvh, DomainType::PvHvm],
        max_vcpus: 4,
    };

    fn kernel_vm(vcpus: u32) -> VmConfig {
        let mut spec = VmSpec::new("t", vcpus, 64);
        spec.domain_type = DomainType::Pvh;
        spec.boot = BootSource::Kernel {
            kernel: "/boot/vmlinux".into(),
            initrd: Some("/boot/initrd".into()),
            cmdline: "console=ttyS0".into(),
        };
        VmConfig::new(VmId::new(), spec)
    }

    fn disk(format: VolumeFormat, read_only: bool) -> DiskAttachment {
        DiskAttachment {
            access: VolumeAccess::Path {
                path: "/var/disk.img".into(),
                format,
            },
            read_only,
            device: None,
        }
    }

    #[test]
    fn a_kernel_vm_with_raw_disks_becomes_the_vmm_config() {
        let mut config = kernel_vm(2);
        config.disks.push(disk(VolumeFormat::Raw, true));
        let vmm = vmm_config(&config, &LIMITS, "/run/vm/console.log".into()).unwrap();
        assert_eq!(
            vmm,
            VmmConfig {
                vcpus: 2,
                memory_mib: 64,
                boot: BootConfig::Kernel {
                    kernel: "/boot/vmlinux".into(),
                    initrd: Some("/boot/initrd".into()),
                    cmdline: "console=ttyS0".into(),
                },
                console_log: Some("/run/vm/console.log".into()),
                disks: vec![DiskConfig {
                    path: "/var/disk.img".into(),
                    read_only: true,
                }],
                prefer_pvh: false,
            }
        );
    }

    #[test]
    fn what_the_backend_cannot_run_is_refused_by_name() {
        let log = || PathBuf::from("/run/vm/console.log");
        let refused = |config: &VmConfig| vmm_config(config, &LIMITS, log()).unwrap_err();

        let e = refused(&kernel_vm(5));
        assert!(
            matches!(&e, Error::InvalidSpec { field, .. } if field == "vm.vcpus"),
            "{e}"
        );

        let mut hvm = kernel_vm(1);
        hvm.spec.domain_type = DomainType::Hvm;
        assert!(matches!(refused(&hvm), Error::Unsupported { op, .. } if op.contains("hvm")));

        let mut from_disk = kernel_vm(1);
        from_disk.spec.boot = BootSource::Disk;
        assert!(
            matches!(refused(&from_disk), Error::Unsupported { op, .. } if op == "booting from disk")
        );

        let mut qcow = kernel_vm(1);
        qcow.disks.push(disk(VolumeFormat::Raw, false));
        qcow.disks.push(disk(VolumeFormat::Qcow2, false));
        assert!(
            matches!(refused(&qcow), Error::Unsupported { op, .. } if op.starts_with("disk 1 "))
        );

        let mut nic = kernel_vm(1);
        nic.nics.push(NicAttachment {
            mac: "52:54:00:00:00:01".into(),
            bridge: "br0".into(),
            tap: None,
        });
        assert!(
            matches!(refused(&nic), Error::Unsupported { op, .. } if op == "network interfaces")
        );
    }
}
