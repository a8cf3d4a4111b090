//! Templates and assemblies: recording what an import produced, cloning VMs from
//! templates, and running extension jobs (the OVF importer lives outside ovm-core).

use super::refs::{PoolRef, RepoRef};
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use super::Manager;
use super::change::{Change, Doc};
use super::names::{NAME_KIND, NameClaim, taken};
use crate::id::{NetworkId, PoolId, VmId};
use crate::job::{JobCtx, JobHandle, JobSpec};
use crate::model::{
    Assembly, DiskSpec, Network, NetworkRole, Repository, Template, Undo, Vm, VmState, Volume,
    validate_name,
};
use crate::storage::StoragePlugin;
use crate::store::{Expect, StoreExt, WriteOp};
use crate::{Error, OpContext, Result};

/// What an import into a repository produced, to be recorded by the manager.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportRecord {
    /// The pool whose repository received the import.
    pub pool: PoolId,
    /// Templates (their volumes already exist in the repository).
    pub templates: Vec<Template>,
    /// The assembly, for a multi-VM package.
    pub assembly: Option<Assembly>,
    /// Networks the templates refer to, by name; those the pool lacks are created.
    pub networks: Vec<(String, NetworkId)>,
}

impl Manager {
    /// Runs an extension's operation as a job of this manager (persisted, with progress,
    /// abort and rollback of what `body` records through the `JobCtx`).
    pub async fn run_job<T, F, Fut>(&self, spec: JobSpec, body: F) -> Result<JobHandle<T>>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
        F: FnOnce(JobCtx) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        self.spawn(spec, body).await
    }

    /// A repository and the plugin serving it.
    pub fn storage_for(
        &self,
        repo_key: impl Into<RepoRef>,
    ) -> Result<(Repository, Arc<dyn StoragePlugin>)> {
        let repo = self.find_repository(repo_key)?;
        let plugin = self.wiring().plugin_for(repo.id)?;
        Ok((repo, plugin))
    }

    /// All templates, by name.
    pub async fn templates(&self) -> Result<Vec<Template>> {
        let mut v: Vec<Template> = self
            .store()
            .list_obj::<Template>()
            .await?
            .into_iter()
            .map(|t| t.value)
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// A template by id or name.
    pub async fn find_template(&self, key: &str) -> Result<Template> {
        let id = key.parse::<crate::id::TemplateId>().ok();
        self.templates()
            .await?
            .into_iter()
            .find(|t| Some(t.id) == id || t.name == key)
            .ok_or_else(|| Error::not_found("template", key))
    }

    /// All assemblies, by name.
    pub async fn assemblies(&self) -> Result<Vec<Assembly>> {
        let mut v: Vec<Assembly> = self
            .store()
            .list_obj::<Assembly>()
            .await?
            .into_iter()
            .map(|a| a.value)
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// Records an import inside a job: volumes, templates, the assembly and missing
    /// networks, each with the undo that removes it (volumes are deleted from the
    /// repository too).
    pub async fn record_import(&self, ctx: &JobCtx, step: &str, rec: ImportRecord) -> Result<()> {
        let existing: BTreeSet<String> = self
            .templates()
            .await?
            .into_iter()
            .map(|t| t.name)
            .collect();
        let existing_asm: BTreeSet<String> = self
            .assemblies()
            .await?
            .into_iter()
            .map(|a| a.name)
            .collect();
        let mut writes = Vec::new();
        let mut undos = Vec::new();
        for t in &rec.templates {
            if existing.contains(&t.name) {
                return Err(Error::AlreadyExists {
                    kind: "template",
                    id: t.name.clone(),
                });
            }
            let plugin = self.wiring().plugin_for(t.repo)?;
            for v in &t.volumes {
                let vol = plugin.volume(t.repo, *v).await?;
                writes.push(WriteOp::put(&vol, Expect::Any)?);
                undos.push(Undo::DeleteVolume {
                    repo: t.repo,
                    volume: *v,
                });
                undos.push(Undo::DeleteObject {
                    kind: "volume".into(),
                    id: v.to_string(),
                });
            }
            writes.push(WriteOp::put(t, Expect::Absent)?);
            undos.push(Undo::DeleteObject {
                kind: "template".into(),
                id: t.id.to_string(),
            });
            let (w, u) = NameClaim::new("template", &t.name, t.id).take()?;
            writes.push(w);
            undos.push(u);
        }
        if let Some(a) = &rec.assembly {
            if existing_asm.contains(&a.name) {
                return Err(Error::AlreadyExists {
                    kind: "assembly",
                    id: a.name.clone(),
                });
            }
            writes.push(WriteOp::put(a, Expect::Absent)?);
            undos.push(Undo::DeleteObject {
                kind: "assembly".into(),
                id: a.id.to_string(),
            });
            let (w, u) = NameClaim::new("assembly", &a.name, a.id).take()?;
            writes.push(w);
            undos.push(u);
        }
        ctx.commit(step, writes, undos, Vec::new())
            .await
            .map_err(|e| match e {
                // Another process imported the same name first.
                Error::Conflict { kind, id, .. } if kind == NAME_KIND => taken(&id),
                e => e,
            })?;
        self.create_import_networks(ctx, step, rec.pool, &rec.networks)
            .await
    }

    /// Creates the networks an import refers to that the manager lacks, as
    /// `create_network` does: realized on every server of `pool`, then recorded with the
    /// servers' memberships.
    async fn create_import_networks(
        &self,
        ctx: &JobCtx,
        step: &str,
        pool: PoolId,
        networks: &[(String, NetworkId)],
    ) -> Result<()> {
        let (new, servers) = {
            let c = self.wiring().index_read();
            let new = networks
                .iter()
                .filter(|(name, id)| !c.networks.contains_key(id) && c.find_network(name).is_none())
                .map(|(name, id)| {
                    validate_name("network.name", name)?;
                    Ok(Network {
                        id: *id,
                        name: name.clone(),
                        pool: Some(pool),
                        roles: BTreeSet::from([NetworkRole::VirtualMachine]),
                        vlan: None,
                        bond_ports: Vec::new(),
                        bridge: None,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let servers = c.pools.get(&pool).map(|p| p.value.servers.clone());
            (new, servers.unwrap_or_default())
        };
        if new.is_empty() {
            return Ok(());
        }
        for net in &new {
            for s in &servers {
                self.wiring().network.realize(*s, net).await?;
            }
        }
        self.apply(ctx, step, |c| {
            let mut changes = Vec::new();
            let mut created = BTreeSet::new();
            for net in &new {
                // Made meanwhile by another job: that one stands.
                if c.networks.contains_key(&net.id) || c.find_network(&net.name).is_some() {
                    continue;
                }
                created.insert(net.id);
                changes.push(Change::Create(Doc::Network(net.clone())));
            }
            for s in servers.iter().filter_map(|s| c.servers.get(s)) {
                let mut ns = s.value.clone();
                ns.networks.extend(created.iter().copied());
                if ns.networks != s.value.networks {
                    changes.push(Change::update(s, ns, Doc::Server));
                }
            }
            Ok(changes)
        })
        .await
    }

    /// Creates a VM from a template: its volumes are cloned (instantly where the plugin
    /// reflinks) and become the new VM's disks.
    pub async fn create_vm_from_template(
        &self,
        pool_key: impl Into<PoolRef>,
        template_key: &str,
        name: &str,
    ) -> Result<JobHandle<VmId>> {
        let name = &crate::model::normalize_name("vm.name", name)?;
        let pool = self.find_pool(pool_key)?;
        let template = self.find_template(template_key).await?;
        if !pool.repositories.contains(&template.repo) {
            return Err(Error::invalid(
                "template",
                format!(
                    "template {} lives in a repository pool {} does not use",
                    template.name, pool.name
                ),
            ));
        }
        let plugin = self.wiring().plugin_for(template.repo)?;
        let mut spec = template.spec.clone();
        spec.name = name.to_string();
        spec.validate()?;
        let vm = Vm {
            id: VmId::new(),
            pool: pool.id,
            spec,
            state: VmState::Stopped,
            server: None,
            last_moved: None,
        };
        let job = JobSpec::new(
            "vm.create_from_template",
            format!("create vm {name} from template {}", template.name),
            Some(("vm", vm.id.to_string())),
            self.initiator(),
            &["clone", "record"],
        );
        let mgr = self.clone();
        self.spawn(job, move |ctx| async move {
            let mut vm = vm;
            let disks = ctx
                .step("clone", async {
                    let mut disks = Vec::new();
                    for (i, src) in template.volumes.iter().enumerate() {
                        let op =
                            OpContext::none().with_cancel(ctx.op_context().cancel_token().clone());
                        let vol: Volume = plugin
                            .clone_volume(
                                template.repo,
                                *src,
                                &format!("{}-disk{i}", vm.spec.name),
                                &op,
                            )
                            .await?;
                        mgr.record_new_volume(&ctx, "clone", &vol).await?;
                        let mut disk = template.spec.disks.get(i).cloned().unwrap_or(DiskSpec {
                            volume: vol.id,
                            read_only: false,
                            device: None,
                        });
                        disk.volume = vol.id;
                        disks.push(disk);
                    }
                    Ok(disks)
                })
                .await?;
            vm.spec.disks = disks;
            let id = vm.id;
            ctx.step(
                "record",
                mgr.apply(&ctx, "record", |c| {
                    if c.find_vm(&vm.spec.name).is_some() {
                        return Err(Error::AlreadyExists {
                            kind: "vm",
                            id: vm.spec.name.clone(),
                        });
                    }
                    Ok(vec![Change::Create(Doc::Vm(vm.clone()))])
                }),
            )
            .await?;
            Ok(id)
        })
        .await
    }
}
