//! OVF work as operations of a [`Manager`]: an import is a job of the manager (persisted,
//! with progress and abort, its templates recorded at the end), an export writes an OVA of
//! one of its templates. The `ovm` command line and the Python bindings both go through
//! here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ovm_core::RepoId;
use ovm_core::model::{Template, Undo, Volume};
use ovm_core::{Error, NetworkId};
use ovm_manager::job::{JobCtx, JobHandle, JobSpec};
use ovm_manager::manager::{ImportRecord, Manager};
use serde::{Deserialize, Serialize};

use crate::export::{DiskExportFormat, export_template};
use crate::import::{ImportOptions, VolumeLog, import_logged};

/// What an import job answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportSummary {
    /// Names of the templates made, in start order for an assembly.
    pub templates: Vec<String>,
    /// The assembly's name, for a multi-VM package.
    pub assembly: Option<String>,
    /// Warnings about the descriptor, the package or the mapping.
    pub warnings: Vec<String>,
    /// What the package asks for that ovm does not honour, as `template: what`.
    pub not_honoured: Vec<String>,
}

/// Starts a job importing the package at `path` (`.ova`, or `.ovf` with its files) into
/// the repository `repo` (name or id) as a template, or an assembly of templates, named
/// `name` (default: from the package). OVF networks named like networks of the manager
/// use those; the others are created in the repository's pool.
///
/// Each volume is recorded in the store, with the undo that deletes it, as soon as it is
/// created: on failure or abort the job's rollback deletes every volume it made and
/// records nothing, and so does the recovery of a job whose process was killed.
pub async fn import_package(
    mgr: &Manager,
    path: &Path,
    repo: &str,
    name: Option<String>,
) -> ovm_core::Result<JobHandle<ImportSummary>> {
    let (repo, plugin) = mgr.storage_for(repo)?;
    let pool = repo.pool.ok_or_else(|| {
        Error::invalid(
            "repository",
            format!("repository {} belongs to no pool", repo.name),
        )
    })?;
    let networks: BTreeMap<String, NetworkId> =
        mgr.networks().into_iter().map(|n| (n.name, n.id)).collect();
    let opts = ImportOptions {
        networks,
        name,
        ..ImportOptions::default()
    };
    let spec = JobSpec::new(
        "ovf.import",
        format!("import {} into {}", path.display(), repo.name),
        Some(("repository", repo.id.to_string())),
        mgr.initiator(),
        &["import", "record"],
    );
    let (m, path): (Manager, PathBuf) = (mgr.clone(), path.to_owned());
    mgr.run_job(spec, move |ctx| async move {
        let progress = ctx.fraction_reporter();
        let result = ctx
            .step("import", async {
                let log = JobVolumes { mgr: &m, ctx: &ctx };
                import_logged(&*plugin, repo.id, &log, &path, &opts, progress)
                    .await
                    .map_err(Error::from)
            })
            .await?;
        let summary = ImportSummary {
            templates: result
                .templates
                .iter()
                .map(|t| t.template.name.clone())
                .collect(),
            assembly: result.assembly.as_ref().map(|a| a.name.clone()),
            warnings: result.warnings.clone(),
            not_honoured: result
                .templates
                .iter()
                .flat_map(|t| {
                    let name = &t.template.name;
                    t.not_honoured.iter().map(move |n| format!("{name}: {n:?}"))
                })
                .collect(),
        };
        let rec = ImportRecord {
            pool,
            templates: result.templates.into_iter().map(|t| t.template).collect(),
            assembly: result.assembly,
            networks: result.networks,
        };
        ctx.step("record", m.record_import(&ctx, "record", rec))
            .await?;
        Ok(summary)
    })
    .await
}

/// The volume log of an import job: each volume recorded with its undo, in the job.
struct JobVolumes<'a> {
    mgr: &'a Manager,
    ctx: &'a JobCtx,
}

#[async_trait::async_trait]
impl VolumeLog for JobVolumes<'_> {
    async fn creating(&self, repo: RepoId, name: &str) -> ovm_core::Result<()> {
        let undo = Undo::DeleteVolumeNamed {
            repo,
            name: name.to_string(),
        };
        self.ctx.record_undo("import", undo).await
    }

    async fn created(&self, volume: &Volume) -> ovm_core::Result<()> {
        self.mgr.record_new_volume(self.ctx, "import", volume).await
    }
}

/// Writes the template `template` (name or id) of `mgr` as an OVA at `out` (which must
/// not exist), its disks in `format`; returns the template. Networks are named as the
/// manager names them.
pub async fn export_template_of(
    mgr: &Manager,
    template: &str,
    out: &Path,
    format: DiskExportFormat,
) -> crate::Result<Template> {
    let t = mgr.find_template(template).await?;
    let (_, plugin) = mgr.storage_for(t.repo)?;
    let names: BTreeMap<NetworkId, String> =
        mgr.networks().into_iter().map(|n| (n.id, n.name)).collect();
    let name_of = move |id: NetworkId| names.get(&id).cloned().unwrap_or_else(|| id.to_string());
    export_template(&*plugin, &t, &name_of, out, format).await?;
    Ok(t)
}
