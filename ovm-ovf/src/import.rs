//! Importing packages into a repository through a `StoragePlugin`: one VirtualSystem
//! becomes a [`Template`]; a VirtualSystemCollection becomes an [`Assembly`] holding one
//! template per system, the collection's networks and its startup order.
//!
//! Disks are written straight into volumes the plugin creates (`create_volume`, then
//! `volume_access` gives the path). On any failure every volume created by the import is
//! deleted, so nothing is left behind. A simulated plugin (no paths) gets its data
//! verified and discarded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ovm_core::id::{AssemblyId, NetworkId, RepoId, TemplateId, VolumeId};
use ovm_core::model::{Assembly, DiskSpec, NicSpec, Template, Volume, VolumeFormat};
use ovm_core::storage::{StoragePlugin, VolumeAccess, VolumeSpec};

use crate::error::{OvfError, Result};
use crate::limits::Limits;
use crate::mapping::{MappedNic, MappedSystem, NotHonoured, map_system};
use crate::model::{Content, Envelope, VirtualSystem};
use crate::ns::NS_OVM;
use crate::ova::{self, DiskPlan, Package};
use crate::xml::XmlElement;

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Limits and policies.
    pub limits: Limits,
    /// Deployment configuration (default: the descriptor's default).
    pub configuration: Option<String>,
    /// Existing networks by OVF network name; other names get new ids (reported).
    pub networks: BTreeMap<String, NetworkId>,
    /// Name of the template or assembly (default: from the descriptor).
    pub name: Option<String>,
    /// Where formats needing random access are spooled (default: the system temp dir).
    pub spool_dir: Option<PathBuf>,
}

/// Instance counts from Oracle VM's `ovm:ScalingSection` or OVF 2's `ScaleOutSection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scaling {
    /// Instances to deploy by default.
    pub default: u32,
    /// Fewest.
    pub min: u32,
    /// Most.
    pub max: u32,
}

/// One imported template and what was not honoured for it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedTemplate {
    /// The template (its volumes live in the repository).
    pub template: Template,
    /// The VirtualSystem id it came from.
    pub system_id: String,
    /// The NICs as the descriptor named them.
    pub nics: Vec<MappedNic>,
    /// Start order in its collection (lower first).
    pub start_order: Option<u32>,
    /// Instance counts, when the package says.
    pub scaling: Option<Scaling>,
    /// What is not honoured.
    pub not_honoured: Vec<NotHonoured>,
}

/// What an import produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportResult {
    /// The templates, in start order for an assembly.
    pub templates: Vec<ImportedTemplate>,
    /// The assembly, for a VirtualSystemCollection.
    pub assembly: Option<Assembly>,
    /// Network names and the ids used for them (new ids for names not given in
    /// [`ImportOptions::networks`]: the caller creates those networks).
    pub networks: Vec<(String, NetworkId)>,
    /// Warnings (descriptor, package, mapping).
    pub warnings: Vec<String>,
}

fn scaling_of(vs: &VirtualSystem) -> Option<Scaling> {
    let child_u32 = |e: &XmlElement, local: &str| {
        e.elements()
            .find(|c| c.name.local == local)
            .and_then(|c| c.text().trim().parse::<u32>().ok())
    };
    for e in &vs.extra.elements {
        if e.name.ns.as_deref() == Some(NS_OVM) && e.name.local == "ScalingSection" {
            let default = child_u32(e, "InstanceCount").unwrap_or(1);
            return Some(Scaling {
                default,
                min: child_u32(e, "MinInstanceCount").unwrap_or(default),
                max: child_u32(e, "MaxInstanceCount").unwrap_or(default),
            });
        }
    }
    None
}

/// OVF 2 ScaleOutSections of a collection, by member id.
fn scale_out(content: &Content, out: &mut BTreeMap<String, Scaling>) {
    if let Content::Collection(c) = content {
        for e in &c.extra.elements {
            if e.name.local != "ScaleOutSection" {
                continue;
            }
            let id = e
                .attrs
                .iter()
                .find(|a| a.name.local == "id")
                .map(|a| a.value.clone());
            let count = e.elements().find(|c| c.name.local == "InstanceCount");
            if let (Some(id), Some(count)) = (id, count) {
                let get = |k: &str| {
                    count
                        .attrs
                        .iter()
                        .find(|a| a.name.local == k)
                        .and_then(|a| a.value.trim().parse::<u32>().ok())
                };
                let default = get("default").unwrap_or(1);
                out.insert(
                    id,
                    Scaling {
                        default,
                        min: get("minimum").unwrap_or(default),
                        max: get("maximum").unwrap_or(default),
                    },
                );
            }
        }
        for m in &c.members {
            scale_out(m, out);
        }
    }
}

fn startup_orders(content: &Content, out: &mut BTreeMap<String, u32>) {
    if let Content::Collection(c) = content {
        if let Some(s) = &c.startup {
            for it in &s.items {
                if let Some(o) = it.order {
                    out.insert(it.id.clone(), o);
                }
            }
        }
        for m in &c.members {
            startup_orders(m, out);
        }
    }
}

fn volume_name(owner: &str, disk_id: &str) -> String {
    let raw = format!("{}-{}", owner, ova::safe_file_stem(disk_id));
    let mut out = String::new();
    for c in raw.chars() {
        let c = if c == '/' || c == '\\' || c.is_control() {
            '_'
        } else {
            c
        };
        if out.len() + c.len_utf8() > 240 {
            break;
        }
        out.push(c);
    }
    out
}

/// Told of each volume an import creates, as soon as it exists. A job records it with the
/// undo that deletes it, so an import that fails, is aborted or whose process is killed at
/// any moment leaves nothing once the job is rolled back or recovered.
#[async_trait::async_trait]
pub trait VolumeLog: Send + Sync {
    /// Records that a volume named `name` is about to be made in `repo` (so that one made
    /// just before the process dies is found by name).
    async fn creating(&self, repo: RepoId, name: &str) -> ovm_core::Result<()>;

    /// Records `volume`, just created in its repository.
    async fn created(&self, volume: &Volume) -> ovm_core::Result<()>;
}

/// The volumes of one import: made through the plugin, each told to the log at once.
/// Without a log, the import deletes them itself if it fails.
struct Volumes<'a> {
    plugin: &'a dyn StoragePlugin,
    repo: RepoId,
    log: Option<&'a dyn VolumeLog>,
    created: Vec<VolumeId>,
}

impl Volumes<'_> {
    async fn create(&mut self, spec: &VolumeSpec) -> Result<Volume> {
        if let Some(log) = self.log {
            // The name must be free before an undo that deletes it by name is recorded.
            let taken = self
                .plugin
                .list_volumes(self.repo)
                .await?
                .into_iter()
                .any(|v| v.name == spec.name);
            if taken {
                return Err(OvfError::Core(ovm_core::Error::AlreadyExists {
                    kind: "volume",
                    id: spec.name.clone(),
                }));
            }
            log.creating(self.repo, &spec.name).await?;
        }
        let vol = self.plugin.create_volume(self.repo, spec).await?;
        match self.log {
            Some(log) => {
                if let Err(e) = log.created(&vol).await {
                    // Not in the job's log: nobody else would delete it.
                    self.delete(vol.id).await;
                    return Err(e.into());
                }
            }
            None => self.created.push(vol.id),
        }
        Ok(vol)
    }

    async fn delete(&self, v: VolumeId) {
        if let Err(e) = self.plugin.delete_volume(self.repo, v).await {
            tracing::warn!(volume = %v, error = %e, "could not delete a volume of a failed import");
        }
    }

    /// After a failed import: deletes what no log will.
    async fn discard_unlogged(self) {
        for v in &self.created {
            self.delete(*v).await;
        }
    }
}

/// Imports an `.ova` (or an `.ovf` with its files) into `repo`. On failure it deletes the
/// volumes it made.
pub async fn import(
    plugin: &dyn StoragePlugin,
    repo: RepoId,
    path: &Path,
    opts: &ImportOptions,
    progress: impl FnMut(u64, u64) + Send + 'static,
) -> Result<ImportResult> {
    import_into(plugin, repo, None, path, opts, progress).await
}

/// Like [`import`], telling `log` of each volume as it is created; on failure the volumes
/// are the log's to delete (a job's rollback does).
pub async fn import_logged(
    plugin: &dyn StoragePlugin,
    repo: RepoId,
    log: &dyn VolumeLog,
    path: &Path,
    opts: &ImportOptions,
    progress: impl FnMut(u64, u64) + Send + 'static,
) -> Result<ImportResult> {
    import_into(plugin, repo, Some(log), path, opts, progress).await
}

async fn import_into(
    plugin: &dyn StoragePlugin,
    repo: RepoId,
    log: Option<&dyn VolumeLog>,
    path: &Path,
    opts: &ImportOptions,
    progress: impl FnMut(u64, u64) + Send + 'static,
) -> Result<ImportResult> {
    let head = {
        let path = path.to_owned();
        let limits = opts.limits.clone();
        tokio::task::spawn_blocking(move || ova::read_package_head(&path, &limits))
            .await
            .map_err(|_| OvfError::disk("package", "reading task failed"))??
    };
    let env = head.parsed.envelope.clone();
    let mut mapped = Vec::new();
    for vs in env.content.systems() {
        let m = map_system(&env, vs, opts.configuration.as_deref(), &opts.limits)?;
        m.check_required()?;
        mapped.push((vs.clone(), m));
    }
    // Refuse delta disks and unknown formats before creating anything.
    ova::disk_plans(&env, &opts.limits)?;
    let mut volumes = Volumes {
        plugin,
        repo,
        log,
        created: Vec::new(),
    };
    let result = import_with_volumes(&mut volumes, path, opts, progress, &head, &env, mapped).await;
    if result.is_err() {
        volumes.discard_unlogged().await;
    }
    result
}

async fn import_with_volumes(
    made: &mut Volumes<'_>,
    path: &Path,
    opts: &ImportOptions,
    progress: impl FnMut(u64, u64) + Send + 'static,
    head: &Package,
    env: &Envelope,
    mapped: Vec<(VirtualSystem, MappedSystem)>,
) -> Result<ImportResult> {
    let (plugin, repo) = (made.plugin, made.repo);
    let is_collection = matches!(env.content, Content::Collection(_));
    let owner = opts.name.clone().unwrap_or_else(|| match &env.content {
        Content::Collection(c) => c
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| c.id.clone()),
        Content::System(_) => mapped
            .first()
            .map(|(_, m)| m.spec.name.clone())
            .unwrap_or_else(|| "vm".into()),
    });
    // One volume per disk used by any system.
    let mut volumes: BTreeMap<String, VolumeId> = BTreeMap::new();
    let mut targets: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut warnings: Vec<String> = head.parsed.warnings.clone();
    warnings.extend(head.warnings.iter().cloned());
    let discard = std::env::temp_dir().join(format!(
        "ovm-ovf-discard-{}-{:x}",
        std::process::id(),
        crate::disk::unique()
    ));
    for (_, m) in &mapped {
        for d in &m.disks {
            if volumes.contains_key(&d.disk_id) {
                continue;
            }
            let spec = VolumeSpec::raw(volume_name(&owner, &d.disk_id), d.capacity_bytes);
            let vol = made.create(&spec).await?;
            volumes.insert(d.disk_id.clone(), vol.id);
            match plugin.volume_access(repo, vol.id).await? {
                VolumeAccess::Path {
                    path,
                    format: VolumeFormat::Raw,
                } => {
                    targets.insert(d.disk_id.clone(), path);
                }
                VolumeAccess::Path { format, .. } => {
                    return Err(OvfError::Core(ovm_core::Error::unsupported(
                        format!("importing into a {format:?} volume"),
                        plugin.info().name,
                    )));
                }
                VolumeAccess::Simulated { .. } => {
                    std::fs::create_dir_all(&discard)
                        .map_err(|e| OvfError::io(format!("creating {}", discard.display()), e))?;
                    targets.insert(
                        d.disk_id.clone(),
                        discard.join(format!("{}.raw", ova::safe_file_stem(&d.disk_id))),
                    );
                    warnings.push(format!(
                        "simulated storage: disk {} verified and discarded",
                        d.disk_id
                    ));
                }
                VolumeAccess::Nbd { url } => {
                    return Err(OvfError::Core(ovm_core::Error::unsupported(
                        format!("importing into an NBD volume ({url})"),
                        plugin.info().name,
                    )));
                }
            }
        }
    }
    // Stream the package into the volumes.
    let extraction = {
        let path = path.to_owned();
        let limits = opts.limits.clone();
        let spool = opts.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
        let targets = targets.clone();
        let mut progress = progress;
        tokio::task::spawn_blocking(move || {
            let mut target = |plan: &DiskPlan| -> Result<PathBuf> {
                match targets.get(&plan.disk_id) {
                    Some(p) => Ok(p.clone()),
                    // A disk no system uses: verify and discard it.
                    None => Ok(spool.join(format!(
                        ".ovm-unused-{}-{:x}.raw",
                        ova::safe_file_stem(&plan.disk_id),
                        crate::disk::unique()
                    ))),
                }
            };
            let r = ova::extract(&path, &limits, &mut target, &spool, &mut progress);
            if let Ok(ex) = &r {
                for d in &ex.disks {
                    if !targets.contains_key(&d.plan.disk_id) {
                        let _ = std::fs::remove_file(&d.path);
                    }
                }
            }
            r
        })
        .await
        .map_err(|_| OvfError::disk("package", "extraction task failed"))?
    };
    let _ = std::fs::remove_dir_all(&discard);
    let extraction = extraction?;
    for d in &extraction.disks {
        if !volumes.contains_key(&d.plan.disk_id) {
            warnings.push(format!(
                "disk {} is used by no virtual system; verified and skipped",
                d.plan.disk_id
            ));
        }
    }
    for w in &extraction.warnings {
        if !warnings.contains(w) {
            warnings.push(w.clone());
        }
    }

    // Networks.
    let mut networks: Vec<(String, NetworkId)> = Vec::new();
    let mut net_id = |name: &str| -> NetworkId {
        if let Some((_, id)) = networks.iter().find(|(n, _)| n == name) {
            return *id;
        }
        let id = opts.networks.get(name).copied().unwrap_or_default();
        networks.push((name.to_owned(), id));
        id
    };
    if let Some(ns) = &env.network_section {
        for n in &ns.networks {
            net_id(&n.name);
        }
    }
    let mut orders = BTreeMap::new();
    startup_orders(&env.content, &mut orders);
    let mut scale = BTreeMap::new();
    scale_out(&env.content, &mut scale);

    let mut templates = Vec::new();
    for (vs, m) in mapped {
        let mut spec = m.spec.clone();
        if !is_collection && let Some(n) = &opts.name {
            spec.name = n.clone();
        }
        spec.disks = m
            .disks
            .iter()
            .filter_map(|d| volumes.get(&d.disk_id))
            .map(|v| DiskSpec {
                volume: *v,
                read_only: false,
                device: None,
            })
            .collect();
        spec.nics = m
            .nics
            .iter()
            .map(|n| NicSpec {
                network: net_id(&n.network),
                mac: n.mac.clone(),
            })
            .collect();
        let order = orders.get(&vs.id).copied();
        spec.start_priority = order.unwrap_or(u32::MAX / 2);
        spec.validate().map_err(OvfError::Core)?;
        for n in &m.not_honoured {
            warnings.push(format!(
                "VirtualSystem {}: {} not honoured: {}",
                vs.id, n.item, n.reason
            ));
        }
        templates.push(ImportedTemplate {
            template: Template {
                id: TemplateId::new(),
                name: spec.name.clone(),
                repo,
                volumes: spec.disks.iter().map(|d| d.volume).collect(),
                spec,
                description: m.description.clone(),
            },
            system_id: vs.id.clone(),
            nics: m.nics.clone(),
            start_order: order,
            scaling: scaling_of(&vs).or_else(|| scale.get(&vs.id).copied()),
            not_honoured: m.not_honoured,
        });
    }
    let assembly = if is_collection {
        templates.sort_by_key(|t| t.start_order.unwrap_or(u32::MAX));
        let description = match &env.content {
            Content::Collection(c) => c
                .annotation
                .as_ref()
                .map(|a| a.annotation.clone())
                .unwrap_or_else(|| c.info.clone()),
            Content::System(_) => String::new(),
        };
        Some(Assembly {
            id: AssemblyId::new(),
            name: owner,
            repo,
            templates: templates.iter().map(|t| t.template.id).collect(),
            networks: networks.iter().map(|(_, id)| *id).collect(),
            description,
        })
    } else {
        None
    };
    Ok(ImportResult {
        templates,
        assembly,
        networks,
        warnings,
    })
}
