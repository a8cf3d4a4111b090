use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::id::{PoolId, RepoId, Timestamp, VolumeId};

/// On-disk format of a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeFormat {
    /// Raw (possibly sparse) image.
    Raw,
    /// QEMU copy-on-write v2.
    Qcow2,
    /// VMware disk.
    Vmdk,
    /// ISO 9660 image.
    Iso,
}

/// A storage repository: where virtual disks, templates and ISOs live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Repository {
    /// Its id (also written in the repository's identity file).
    pub id: RepoId,
    /// Unique name.
    pub name: String,
    /// The Storage Connect plugin that serves it.
    pub plugin: String,
    /// Where it is (a path for the file-server plugin).
    pub location: String,
    /// The pool that owns it, if any.
    pub pool: Option<PoolId>,
    /// Total bytes.
    #[serde(default)]
    pub capacity_bytes: u64,
    /// Free bytes.
    #[serde(default)]
    pub free_bytes: u64,
}

/// A volume (virtual disk) in a repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    /// Its id.
    pub id: VolumeId,
    /// The repository holding it.
    pub repo: RepoId,
    /// Name, unique in its repository.
    pub name: String,
    /// Virtual size the guest sees, bytes.
    pub size_bytes: u64,
    /// Bytes actually allocated (thin provisioning).
    pub allocated_bytes: u64,
    /// Format.
    pub format: VolumeFormat,
    /// Path on the server, where the plugin exposes one.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The volume this one was cloned or snapshotted from.
    #[serde(default)]
    pub parent: Option<VolumeId>,
    /// When it was created.
    #[serde(default)]
    pub created_at: Timestamp,
}
