//! The `Hypervisor` trait: what a server's virtualisation backend does for the manager.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::id::{ServerId, VmId};
use crate::model::{DomainType, HypervisorKind, VmSpec, VmState};
use crate::storage::VolumeAccess;
use crate::{Error, Result};

/// What a backend can do. Operations outside these return `Error::Unsupported`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Capabilities {
    /// Domain types it can run.
    pub domain_types: Vec<DomainType>,
    /// Pause and resume.
    pub pause: bool,
    /// Console capture.
    pub console: bool,
    /// Guest key/value messages.
    pub guest_messages: bool,
    /// Live migration.
    pub live_migration: bool,
    /// Save to a file and restore.
    pub snapshot: bool,
    /// Change vCPUs or memory of a running VM.
    pub hotplug: bool,
    /// Boots its bundled test guest (`BootSource::TestGuest`).
    pub test_guest: bool,
    /// Most vCPUs per VM.
    pub max_vcpus: u32,
}

/// Facts about a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    /// Host name.
    pub hostname: String,
    /// Hypervisor.
    pub hypervisor: HypervisorKind,
    /// Hypervisor version.
    pub version: String,
    /// CPUs (threads) for guests.
    pub cpus: u32,
    /// Memory for guests, MiB.
    pub memory_mib: u64,
    /// Memory not yet given to guests, MiB.
    pub free_memory_mib: u64,
}

/// A disk as the hypervisor sees it: where the volume is and how to open it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskAttachment {
    /// How to reach the volume.
    pub access: VolumeAccess,
    /// Refuse guest writes.
    pub read_only: bool,
    /// Guest device name, if chosen.
    pub device: Option<String>,
}

/// A NIC as the hypervisor sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NicAttachment {
    /// MAC address.
    pub mac: String,
    /// The host bridge to join.
    pub bridge: String,
    /// The TAP device, where the network backend made one.
    pub tap: Option<String>,
}

/// Everything a hypervisor needs to define a VM: the spec with its disks and NICs resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmConfig {
    /// The VM.
    pub id: VmId,
    /// What it is.
    pub spec: VmSpec,
    /// Its disks, resolved.
    pub disks: Vec<DiskAttachment>,
    /// Its NICs, resolved.
    pub nics: Vec<NicAttachment>,
}

impl VmConfig {
    /// A config with no disks or NICs.
    pub fn new(id: VmId, spec: VmSpec) -> Self {
        VmConfig {
            id,
            spec,
            disks: Vec::new(),
            nics: Vec::new(),
        }
    }
}

/// Resource use of a VM.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct VmStats {
    /// CPU time used by the guest, nanoseconds.
    pub cpu_time_ns: u64,
    /// Guest memory, MiB.
    pub memory_mib: u64,
    /// Host memory used by the VM (VMM + guest), bytes, where known.
    pub host_rss_bytes: u64,
    /// Time since start, milliseconds.
    pub uptime_ms: u64,
}

/// What happened to a VM, as a backend reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum VmEventKind {
    /// It started.
    Started,
    /// The guest asked to reboot.
    Rebooted,
    /// The guest powered off.
    PoweredOff,
    /// It was stopped or killed from outside.
    Stopped,
    /// The guest crashed (triple fault, panic).
    Crashed {
        /// What the backend saw.
        reason: String,
    },
    /// The hypervisor failed to run it (e.g. KVM internal error); the detail holds registers.
    InternalError {
        /// What the backend saw.
        detail: String,
    },
    /// The guest sent something malformed; it was ignored.
    GuestMisbehaved {
        /// What it sent.
        detail: String,
    },
    /// Paused.
    Paused,
    /// Resumed.
    Resumed,
    /// The guest published a key/value message.
    GuestMessage {
        /// The key.
        key: String,
    },
}

/// An event from a backend about one VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmEvent {
    /// Which VM.
    pub vm: VmId,
    /// What happened.
    pub kind: VmEventKind,
}

/// Where a live migration goes: prepared by the destination, handed to the source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationTarget {
    /// Destination server.
    pub server: ServerId,
    /// Backend-specific address (`unix:/path`, `tcp:host:port`, an `xl` host name).
    pub address: String,
}

/// Console output as a stream of chunks.
pub type ConsoleStream = Pin<Box<dyn Stream<Item = Vec<u8>> + Send>>;

/// Limits of guest key/value messages.
pub mod guest_message {
    /// Longest key, bytes.
    pub const MAX_KEY: usize = 256;
    /// Longest value, bytes.
    pub const MAX_VALUE: usize = 8 * 1024;

    /// Checks a key and value against the limits.
    pub fn validate(key: &str, value: &[u8]) -> crate::Result<()> {
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(crate::Error::invalid(
                "message.key",
                format!("{} bytes is outside 1..={MAX_KEY}", key.len()),
            ));
        }
        if key.chars().any(|c| c.is_control()) {
            return Err(crate::Error::invalid(
                "message.key",
                "contains a control character",
            ));
        }
        if value.len() > MAX_VALUE {
            return Err(crate::Error::invalid(
                "message.value",
                format!("{} bytes is more than {MAX_VALUE}", value.len()),
            ));
        }
        Ok(())
    }
}

/// A hypervisor backend on one server.
///
/// Object-safe: the manager holds each server's backend as `Arc<dyn Hypervisor>`. Every
/// method that the backend does not support returns `Error::Unsupported`; the defaults here
/// do exactly that, so a backend implements only what it has.
#[async_trait]
pub trait Hypervisor: Send + Sync {
    /// Short backend name (`sim`, `kvm`, `xen`), used in errors.
    fn backend(&self) -> &str;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Facts about the host.
    async fn host_info(&self) -> Result<HostInfo>;

    /// Defines a VM (does not start it). Fails with `AlreadyExists` if the id is taken and
    /// `InvalidSpec` / `Unsupported` for what the backend cannot run.
    async fn define(&self, config: &VmConfig) -> Result<()>;

    /// Removes a stopped VM's definition.
    async fn undefine(&self, vm: VmId) -> Result<()>;

    /// Starts a defined VM; returns once it runs.
    async fn start(&self, vm: VmId) -> Result<()>;

    /// Asks the guest to shut down; after `timeout`, kills it.
    async fn stop(&self, vm: VmId, timeout: Duration) -> Result<()>;

    /// Stops the VM at once.
    async fn kill(&self, vm: VmId) -> Result<()>;

    /// Pauses the vCPUs.
    async fn pause(&self, vm: VmId) -> Result<()> {
        let _ = vm;
        Err(Error::unsupported("pause", self.backend()))
    }

    /// Resumes paused vCPUs.
    async fn resume(&self, vm: VmId) -> Result<()> {
        let _ = vm;
        Err(Error::unsupported("resume", self.backend()))
    }

    /// The VM's state.
    async fn state(&self, vm: VmId) -> Result<VmState>;

    /// The VMs defined here with their states, as they are now: a backend whose host is
    /// shared with other processes lists what they defined or started too (one being
    /// started elsewhere at this moment as `starting`). Reconciliation relies on it.
    async fn list(&self) -> Result<Vec<(VmId, VmState)>>;

    /// Resource use.
    async fn stats(&self, vm: VmId) -> Result<VmStats> {
        let _ = vm;
        Err(Error::unsupported("stats", self.backend()))
    }

    /// Console output so far (a bounded ring buffer).
    async fn console_buffer(&self, vm: VmId) -> Result<Vec<u8>> {
        let _ = vm;
        Err(Error::unsupported("console", self.backend()))
    }

    /// Console output from now on.
    async fn console_stream(&self, vm: VmId) -> Result<ConsoleStream> {
        let _ = vm;
        Err(Error::unsupported("console", self.backend()))
    }

    /// Sends input to the console.
    async fn console_write(&self, vm: VmId, input: &[u8]) -> Result<()> {
        let _ = (vm, input);
        Err(Error::unsupported("console input", self.backend()))
    }

    /// Sends a key/value message to the guest (limits: `guest_message`).
    async fn guest_send(&self, vm: VmId, key: &str, value: &[u8]) -> Result<()> {
        let _ = (vm, key, value);
        Err(Error::unsupported("guest messages", self.backend()))
    }

    /// The value the guest last published under `key`, if any.
    async fn guest_read(&self, vm: VmId, key: &str) -> Result<Option<Vec<u8>>> {
        let _ = (vm, key);
        Err(Error::unsupported("guest messages", self.backend()))
    }

    /// Saves a VM's full state to `path` and stops it.
    async fn save(&self, vm: VmId, path: &Path) -> Result<()> {
        let _ = (vm, path);
        Err(Error::unsupported("save", self.backend()))
    }

    /// Restores a VM saved by `save`.
    async fn restore(&self, config: &VmConfig, path: &Path) -> Result<()> {
        let _ = (config, path);
        Err(Error::unsupported("restore", self.backend()))
    }

    /// Prepares to receive a VM by live migration; returns where the source sends it.
    async fn migrate_prepare(&self, config: &VmConfig) -> Result<MigrationTarget> {
        let _ = config;
        Err(Error::unsupported("live migration", self.backend()))
    }

    /// Sends a running VM to a prepared target; the VM runs there when this returns.
    async fn migrate_send(&self, vm: VmId, target: &MigrationTarget) -> Result<()> {
        let _ = (vm, target);
        Err(Error::unsupported("live migration", self.backend()))
    }

    /// Changes the vCPUs of a running VM.
    async fn set_vcpus(&self, vm: VmId, vcpus: u32) -> Result<()> {
        let _ = (vm, vcpus);
        Err(Error::unsupported("set vcpus", self.backend()))
    }

    /// Changes the memory of a running VM, MiB.
    async fn set_memory(&self, vm: VmId, memory_mib: u64) -> Result<()> {
        let _ = (vm, memory_mib);
        Err(Error::unsupported("set memory", self.backend()))
    }

    /// Events about this host's VMs from now on.
    fn subscribe(&self) -> broadcast::Receiver<VmEvent>;

    /// Whether the host answers, for a backend on another machine (an agent's): the value
    /// changes when reachability does. `None`: a local backend, reachable while it exists.
    fn reachability(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        None
    }

    /// Where this backend keeps a VM's files (logs, sockets), if it has such a place.
    fn vm_dir(&self, vm: VmId) -> Option<PathBuf> {
        let _ = vm;
        None
    }
}
