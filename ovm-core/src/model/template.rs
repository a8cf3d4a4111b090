use serde::{Deserialize, Serialize};

use crate::id::{AssemblyId, NetworkId, RepoId, TemplateId, VolumeId};
use crate::model::VmSpec;

/// A template: a VM spec and its disks, from which VMs are cloned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    /// Its id.
    pub id: TemplateId,
    /// Unique name.
    pub name: String,
    /// The repository holding its disks.
    pub repo: RepoId,
    /// The VM it describes (disk volumes point into `repo`).
    pub spec: VmSpec,
    /// Its disk volumes, in order.
    pub volumes: Vec<VolumeId>,
    /// Free text (from an OVF annotation, say).
    #[serde(default)]
    pub description: String,
}

/// An assembly: several templates with their networks and start order (an OVF
/// VirtualSystemCollection).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assembly {
    /// Its id.
    pub id: AssemblyId,
    /// Unique name.
    pub name: String,
    /// The repository holding its disks.
    pub repo: RepoId,
    /// Member templates, in start order.
    pub templates: Vec<TemplateId>,
    /// Networks the members connect to.
    #[serde(default)]
    pub networks: Vec<NetworkId>,
    /// Free text.
    #[serde(default)]
    pub description: String,
}
