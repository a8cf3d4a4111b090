//! Repositories and volumes, through the registered Storage Connect plugins.

use super::refs::{PoolRef, RepoRef};
use std::sync::Arc;

use super::Manager;
use super::change::{Change, Doc};
use crate::id::{RepoId, VolumeId};
use crate::job::{JobCtx, JobHandle, JobSpec};
use crate::model::{Repository, Undo, Volume};
use crate::op::OpContext;
use crate::storage::{PluginInfo, StoragePlugin, VolumeSpec};
use crate::store::{Expect, StoreExt, WriteOp};
use crate::{Error, Result};

impl Manager {
    /// The registered storage plugins.
    pub fn storage_plugins(&self) -> Vec<PluginInfo> {
        let mut v: Vec<PluginInfo> = self.wiring().storage.values().map(|p| p.info()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// All registered repositories, by name.
    pub fn repositories(&self) -> Vec<Repository> {
        let mut v: Vec<Repository> = self
            .wiring()
            .index_read()
            .repos
            .values()
            .map(super::value)
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// A repository by id or name.
    pub fn find_repository(&self, key: impl Into<RepoRef>) -> Result<Repository> {
        Ok(self
            .wiring()
            .index_read()
            .repo_ref(&key.into())?
            .value
            .clone())
    }

    /// Registers a repository with a pool: creates it at `location` (`create`) or opens an
    /// existing one, through plugin `plugin`. Its volumes become known to the manager.
    pub async fn register_repository(
        &self,
        pool_key: impl Into<PoolRef>,
        plugin: &str,
        name: &str,
        location: &str,
        create: bool,
    ) -> Result<JobHandle<RepoId>> {
        let name = &crate::model::normalize_name("repository.name", name)?;
        let pool = self.find_pool(pool_key)?;
        let plugin = self.wiring().plugin(plugin)?;
        let (name, location) = (name.to_string(), location.to_string());
        let job = JobSpec::new(
            "repository.register",
            format!(
                "register repository {name} at {location} with pool {}",
                pool.name
            ),
            None,
            self.initiator(),
            &["open", "record"],
        );
        let mgr = self.clone();
        self.spawn(job, move |ctx| async move {
            if mgr.wiring().index_read().find_repo(&name).is_some() {
                return Err(Error::AlreadyExists {
                    kind: "repository",
                    id: name,
                });
            }
            let mut repo = ctx
                .step("open", async {
                    if create {
                        plugin
                            .create_repository(&name, &location, Some(pool.id))
                            .await
                    } else {
                        plugin.open_repository(&location, Some(pool.id)).await
                    }
                })
                .await?;
            repo.name = name.clone();
            let id = repo.id;
            let recorded = ctx
                .step(
                    "record",
                    mgr.record_repository(&ctx, &*plugin, repo, pool.id),
                )
                .await;
            if let Err(e) = recorded {
                // Give the repository back: the next attempt must be able to take it.
                let _ = plugin.close_repository(id).await;
                return Err(e);
            }
            Ok(id)
        })
        .await
    }

    async fn record_repository(
        &self,
        ctx: &JobCtx,
        plugin: &dyn StoragePlugin,
        repo: Repository,
        pool: crate::id::PoolId,
    ) -> Result<()> {
        self.apply(ctx, "record", |c| {
            if c.repos.contains_key(&repo.id) {
                return Err(Error::AlreadyExists {
                    kind: "repository",
                    id: repo.id.to_string(),
                });
            }
            let p = c.pool(pool)?;
            let mut np = p.value.clone();
            np.repositories.push(repo.id);
            Ok(vec![
                Change::Create(Doc::Repo(repo.clone())),
                Change::update(p, np, Doc::Pool),
            ])
        })
        .await?;
        let volumes = plugin.list_volumes(repo.id).await?;
        let mut writes = Vec::with_capacity(volumes.len());
        let mut undos = Vec::with_capacity(volumes.len());
        for v in &volumes {
            writes.push(WriteOp::put(v, Expect::Any)?);
            undos.push(Undo::DeleteObject {
                kind: "volume".into(),
                id: v.id.to_string(),
            });
        }
        ctx.commit("record", writes, undos, Vec::new()).await?;
        Ok(())
    }

    /// The volumes of a repository, by name.
    pub async fn volumes(&self, repo_key: impl Into<RepoRef>) -> Result<Vec<Volume>> {
        let repo = self.find_repository(repo_key)?;
        let mut v: Vec<Volume> = self
            .store()
            .list_obj::<Volume>()
            .await?
            .into_iter()
            .map(|v| v.value)
            .filter(|v| v.repo == repo.id)
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// A volume of a repository by id or name.
    pub async fn find_volume(&self, repo_key: impl Into<RepoRef>, key: &str) -> Result<Volume> {
        let vols = self.volumes(repo_key).await?;
        let by_id = key.parse::<VolumeId>().ok();
        vols.into_iter()
            .find(|v| Some(v.id) == by_id || v.name == key)
            .ok_or_else(|| Error::not_found("volume", key))
    }

    fn repo_plugin(
        &self,
        repo_key: impl Into<RepoRef>,
    ) -> Result<(Repository, Arc<dyn StoragePlugin>)> {
        let repo = self.find_repository(repo_key)?;
        let plugin = self.wiring().plugin_for(repo.id)?;
        Ok((repo, plugin))
    }

    /// Records a volume the plugin just made, with the undo that deletes it (for jobs that
    /// make volumes, as an OVF import does).
    pub async fn record_new_volume(&self, ctx: &JobCtx, step: &str, vol: &Volume) -> Result<()> {
        let undos = vec![
            Undo::DeleteVolume {
                repo: vol.repo,
                volume: vol.id,
            },
            Undo::DeleteObject {
                kind: "volume".into(),
                id: vol.id.to_string(),
            },
        ];
        ctx.commit(
            step,
            vec![WriteOp::put(vol, Expect::Absent)?],
            undos,
            Vec::new(),
        )
        .await?;
        Ok(())
    }

    /// Creates a (thin) volume.
    pub async fn create_volume(
        &self,
        repo_key: impl Into<RepoRef>,
        spec: VolumeSpec,
    ) -> Result<JobHandle<VolumeId>> {
        spec.validate()?;
        let (repo, plugin) = self.repo_plugin(repo_key)?;
        let job = JobSpec::new(
            "volume.create",
            format!("create volume {} in {}", spec.name, repo.name),
            Some(("repository", repo.id.to_string())),
            self.initiator(),
            &["create"],
        );
        let mgr = self.clone();
        self.spawn(job, move |ctx| async move {
            ctx.step("create", async {
                let vol = plugin.create_volume(repo.id, &spec).await?;
                mgr.record_new_volume(&ctx, "create", &vol).await?;
                Ok(vol.id)
            })
            .await
        })
        .await
    }

    /// Clones a volume (instant where the plugin reflinks; otherwise a copy whose progress
    /// is the job's and which an abort stops).
    pub async fn clone_volume(
        &self,
        repo_key: impl Into<RepoRef>,
        source: &str,
        name: &str,
    ) -> Result<JobHandle<VolumeId>> {
        let name = &crate::model::normalize_name("volume.name", name)?;
        let (repo, plugin) = self.repo_plugin(repo_key)?;
        let src = self.find_volume(repo.id, source).await?;
        let name = name.to_string();
        let job = JobSpec::new(
            "volume.clone",
            format!("clone volume {} to {name} in {}", src.name, repo.name),
            Some(("volume", src.id.to_string())),
            self.initiator(),
            &["clone"],
        );
        let mgr = self.clone();
        self.spawn(job, move |ctx| async move {
            ctx.step("clone", async {
                let op = OpContext::with_progress(Arc::new(ctx.fraction_reporter()))
                    .with_cancel(ctx.op_context().cancel_token().clone());
                let vol = plugin.clone_volume(repo.id, src.id, &name, &op).await?;
                mgr.record_new_volume(&ctx, "clone", &vol).await?;
                Ok(vol.id)
            })
            .await
        })
        .await
    }

    /// Resizes a volume (shrinking only with `allow_shrink`).
    pub async fn resize_volume(
        &self,
        repo_key: &str,
        key: &str,
        size_bytes: u64,
        allow_shrink: bool,
    ) -> Result<JobHandle<()>> {
        crate::storage::validate_size(size_bytes)?;
        let (repo, plugin) = self.repo_plugin(repo_key)?;
        let vol = self.find_volume(repo.id, key).await?;
        let job = JobSpec::new(
            "volume.resize",
            format!("resize volume {} to {size_bytes} bytes", vol.name),
            Some(("volume", vol.id.to_string())),
            self.initiator(),
            &["resize"],
        );
        let mgr = self.clone();
        self.spawn(job, move |ctx| async move {
            ctx.step("resize", async {
                let new = plugin
                    .resize_volume(repo.id, vol.id, size_bytes, allow_shrink)
                    .await?;
                let undo = Undo::RestoreObject {
                    kind: "volume".into(),
                    id: vol.id.to_string(),
                    data: serde_json::to_value(&vol)?,
                };
                ctx.commit(
                    "resize",
                    vec![WriteOp::put(&new, Expect::Any)?],
                    vec![undo],
                    Vec::new(),
                )
                .await?;
                let _ = &mgr;
                Ok(())
            })
            .await
        })
        .await
    }

    /// Deletes a volume no VM uses.
    pub async fn delete_volume(
        &self,
        repo_key: impl Into<RepoRef>,
        key: &str,
    ) -> Result<JobHandle<()>> {
        let (repo, plugin) = self.repo_plugin(repo_key)?;
        let vol = self.find_volume(repo.id, key).await?;
        if let Some(user) = self
            .vms()
            .into_iter()
            .find(|v| v.spec.disks.iter().any(|d| d.volume == vol.id))
        {
            return Err(Error::InvalidState {
                kind: "volume",
                id: vol.name.clone(),
                state: format!("used by vm {}", user.spec.name),
                op: "delete".into(),
            });
        }
        let job = JobSpec::new(
            "volume.delete",
            format!("delete volume {} from {}", vol.name, repo.name),
            Some(("volume", vol.id.to_string())),
            self.initiator(),
            &["delete"],
        );
        self.spawn(job, move |ctx| async move {
            ctx.step("delete", async {
                plugin.delete_volume(repo.id, vol.id).await?;
                ctx.commit(
                    "delete",
                    vec![WriteOp::delete::<Volume>(vol.id, Expect::Any)],
                    vec![],
                    vec![],
                )
                .await?;
                Ok(())
            })
            .await
        })
        .await
    }
}
