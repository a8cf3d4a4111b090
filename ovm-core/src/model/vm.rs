use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::id::{NetworkId, PoolId, ServerId, Timestamp, VmId, VolumeId};
use crate::{Error, Result};

/// How a guest is virtualised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainType {
    /// Hardware virtualised, emulated devices.
    Hvm,
    /// Hardware virtualised with paravirtual (virtio / PV) drivers.
    PvHvm,
    /// Paravirtualised (Xen PV).
    Pv,
    /// PVH: hardware virtualisation, paravirtual boot and devices.
    Pvh,
}

impl DomainType {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DomainType::Hvm => "hvm",
            DomainType::PvHvm => "pv_hvm",
            DomainType::Pv => "pv",
            DomainType::Pvh => "pvh",
        }
    }
}

/// How a VM boots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum BootSource {
    /// Direct kernel boot.
    Kernel {
        /// Kernel image (bzImage or ELF).
        kernel: PathBuf,
        /// Optional initial ramdisk.
        #[serde(default)]
        initrd: Option<PathBuf>,
        /// Kernel command line.
        #[serde(default)]
        cmdline: String,
    },
    /// The backend's bundled test guest, running the workload named by `cmdline`
    /// (e.g. `idle`, `dirty=64,span=32`, `kv`). Backends without one return `Unsupported`.
    TestGuest {
        /// The test guest's command line.
        cmdline: String,
    },
    /// Boot from the first disk (bootloader).
    Disk,
}

impl Default for BootSource {
    fn default() -> Self {
        BootSource::TestGuest {
            cmdline: "idle".into(),
        }
    }
}

/// A virtual disk of a VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskSpec {
    /// The volume backing the disk.
    pub volume: VolumeId,
    /// Refuse guest writes.
    #[serde(default)]
    pub read_only: bool,
    /// Guest device name (`xvda`, `vda`), backend default if absent.
    #[serde(default)]
    pub device: Option<String>,
}

/// A virtual NIC of a VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NicSpec {
    /// The network it connects to.
    pub network: NetworkId,
    /// MAC address (`52:54:00:...`); generated if absent.
    #[serde(default)]
    pub mac: Option<String>,
}

/// Whether preferred servers restrict placement or only guide it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreferredMode {
    /// Preferred servers are favoured; others are used when they do not fit.
    #[default]
    Auto,
    /// Only preferred servers are candidates.
    Manual,
}

/// What a VM is: everything needed to define it on a hypervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmSpec {
    /// Unique name.
    pub name: String,
    /// Virtualisation mode.
    #[serde(default = "default_domain_type")]
    pub domain_type: DomainType,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory at start, MiB.
    pub memory_mib: u64,
    /// Most memory the VM may grow to, MiB (≥ `memory_mib`).
    pub max_memory_mib: u64,
    /// How it boots.
    #[serde(default)]
    pub boot: BootSource,
    /// Virtual disks.
    #[serde(default)]
    pub disks: Vec<DiskSpec>,
    /// Virtual NICs.
    #[serde(default)]
    pub nics: Vec<NicSpec>,
    /// Restart elsewhere when its server fails (effective only if the pool has HA too).
    #[serde(default)]
    pub ha_enabled: bool,
    /// Preferred servers.
    #[serde(default)]
    pub preferred_servers: Vec<ServerId>,
    /// How preferred servers are used.
    #[serde(default)]
    pub preferred_mode: PreferredMode,
    /// Start order: lower starts first (HA restarts, assemblies).
    #[serde(default)]
    pub start_priority: u32,
    /// VMs sharing an affinity group are kept on one server.
    #[serde(default)]
    pub affinity_group: Option<String>,
    /// VMs sharing an anti-affinity group are kept on different servers.
    #[serde(default)]
    pub anti_affinity_group: Option<String>,
}

fn default_domain_type() -> DomainType {
    DomainType::PvHvm
}

impl VmSpec {
    /// Most vCPUs a spec may ask for.
    pub const MAX_VCPUS: u32 = 256;
    /// Most memory a spec may ask for: 16 TiB.
    pub const MAX_MEMORY_MIB: u64 = 16 << 20;

    /// A small spec with defaults: PVHVM, idle test guest, no disks or NICs.
    pub fn new(name: impl Into<String>, vcpus: u32, memory_mib: u64) -> Self {
        VmSpec {
            name: name.into(),
            domain_type: DomainType::PvHvm,
            vcpus,
            memory_mib,
            max_memory_mib: memory_mib,
            boot: BootSource::default(),
            disks: Vec::new(),
            nics: Vec::new(),
            ha_enabled: false,
            preferred_servers: Vec::new(),
            preferred_mode: PreferredMode::Auto,
            start_priority: 0,
            affinity_group: None,
            anti_affinity_group: None,
        }
    }

    /// Checks the spec for impossible values, naming the field.
    pub fn validate(&self) -> Result<()> {
        super::validate_name("vm.name", &self.name)?;
        if self.vcpus == 0 || self.vcpus > Self::MAX_VCPUS {
            return Err(Error::invalid(
                "vm.vcpus",
                format!("{} is outside 1..={}", self.vcpus, Self::MAX_VCPUS),
            ));
        }
        if self.memory_mib == 0 || self.memory_mib > Self::MAX_MEMORY_MIB {
            return Err(Error::invalid(
                "vm.memory_mib",
                format!(
                    "{} MiB is outside 1..={} MiB",
                    self.memory_mib,
                    Self::MAX_MEMORY_MIB
                ),
            ));
        }
        if self.max_memory_mib < self.memory_mib || self.max_memory_mib > Self::MAX_MEMORY_MIB {
            return Err(Error::invalid(
                "vm.max_memory_mib",
                format!(
                    "{} MiB must be at least memory_mib ({} MiB) and at most {} MiB",
                    self.max_memory_mib,
                    self.memory_mib,
                    Self::MAX_MEMORY_MIB
                ),
            ));
        }
        if self.preferred_mode == PreferredMode::Manual && self.preferred_servers.is_empty() {
            return Err(Error::invalid(
                "vm.preferred_servers",
                "manual preferred mode needs at least one preferred server",
            ));
        }
        if let BootSource::Kernel { kernel, .. } = &self.boot
            && kernel.as_os_str().is_empty()
        {
            return Err(Error::invalid("vm.boot.kernel", "empty kernel path"));
        }
        for (i, d) in self.disks.iter().enumerate() {
            if let Some(dev) = &d.device {
                super::validate_name(&format!("vm.disks[{i}].device"), dev)?;
            }
        }
        for (i, n) in self.nics.iter().enumerate() {
            if let Some(mac) = &n.mac
                && !is_mac(mac)
            {
                return Err(Error::invalid(
                    format!("vm.nics[{i}].mac"),
                    format!("{mac:?} is not a MAC address like 52:54:00:12:34:56"),
                ));
            }
        }
        Ok(())
    }
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The run state of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Defined, not running.
    Stopped,
    /// Being started.
    Starting,
    /// Running.
    Running,
    /// Paused (vCPUs stopped, memory kept).
    Paused,
    /// Being stopped.
    Stopping,
    /// Being migrated.
    Migrating,
    /// Stopped by a guest crash or hypervisor error.
    Crashed,
}

impl VmState {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Stopped => "stopped",
            VmState::Starting => "starting",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Stopping => "stopping",
            VmState::Migrating => "migrating",
            VmState::Crashed => "crashed",
        }
    }

    /// True while the VM holds resources on a server.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            VmState::Starting
                | VmState::Running
                | VmState::Paused
                | VmState::Stopping
                | VmState::Migrating
        )
    }
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A VM as the manager records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vm {
    /// Its id.
    pub id: VmId,
    /// The pool it lives in.
    pub pool: PoolId,
    /// What it is.
    pub spec: VmSpec,
    /// Its run state.
    pub state: VmState,
    /// The server it runs on (or last ran on).
    pub server: Option<ServerId>,
    /// When it was last migrated (DRS hold time).
    #[serde(default)]
    pub last_moved: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_specs_are_refused_naming_the_field() {
        let ok = VmSpec::new("a", 2, 512);
        assert!(ok.validate().is_ok());
        let field = |s: VmSpec| match s.validate() {
            Err(Error::InvalidSpec { field, .. }) => field,
            other => panic!("expected InvalidSpec, got {other:?}"),
        };
        assert_eq!(
            field(VmSpec {
                vcpus: 0,
                ..ok.clone()
            }),
            "vm.vcpus"
        );
        assert_eq!(
            field(VmSpec {
                memory_mib: 0,
                ..ok.clone()
            }),
            "vm.memory_mib"
        );
        assert_eq!(
            field(VmSpec {
                max_memory_mib: 1,
                ..ok.clone()
            }),
            "vm.max_memory_mib"
        );
        assert_eq!(
            field(VmSpec {
                preferred_mode: PreferredMode::Manual,
                ..ok.clone()
            }),
            "vm.preferred_servers"
        );
        let mut bad_mac = ok.clone();
        bad_mac.nics.push(NicSpec {
            network: NetworkId::new(),
            mac: Some("zz".into()),
        });
        assert_eq!(field(bad_mac), "vm.nics[0].mac");
    }
}
