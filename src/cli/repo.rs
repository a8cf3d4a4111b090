//! `ovm repo ...` and `ovm volume ...`.

use clap::Subcommand;
use ovm::storage::VolumeSpec;

use super::output::{self, Format, short};
use super::{Ctx, user_error, wait::wait};

#[derive(Debug, Subcommand)]
pub enum RepoCmd {
    /// Register a repository with a pool (create it at PATH with --create).
    Add {
        /// The pool (name or id).
        pool: String,
        /// The repository's name.
        name: String,
        /// Where it is (a directory for the `fs` plugin).
        path: String,
        /// Create a new repository there (else open an existing one).
        #[arg(long)]
        create: bool,
        /// The Storage Connect plugin.
        #[arg(long, default_value = "fs")]
        plugin: String,
    },
    /// List repositories.
    List,
    /// Show one repository and its volumes.
    Show {
        /// Name or id.
        repo: String,
    },
    /// List the storage plugins.
    Plugins,
}

#[derive(Debug, Subcommand)]
pub enum VolumeCmd {
    /// Create a thin volume.
    Create {
        /// The repository.
        repo: String,
        /// The volume's name.
        name: String,
        /// Size: bytes, or with a unit (`10G`, `512M`, `1T`).
        size: String,
    },
    /// Clone a volume (instant where the file system reflinks).
    Clone {
        /// The repository.
        repo: String,
        /// The source volume.
        source: String,
        /// The new volume's name.
        name: String,
    },
    /// Resize a volume.
    Resize {
        /// The repository.
        repo: String,
        /// The volume.
        volume: String,
        /// New size.
        size: String,
        /// Allow shrinking (data past the new end is lost).
        #[arg(long)]
        shrink: bool,
    },
    /// Delete a volume no VM uses.
    Delete {
        /// The repository.
        repo: String,
        /// The volume.
        volume: String,
    },
    /// List a repository's volumes.
    List {
        /// The repository.
        repo: String,
    },
}

/// Parses `10G`, `512M`, `1T`, `4096` (bytes).
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, shift) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = s[i..].to_ascii_uppercase();
            let shift = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "K" => 10,
                "M" => 20,
                "G" => 30,
                "T" => 40,
                "" => 0,
                _ => {
                    return Err(user_error(format!(
                        "size {s:?}: unknown unit (use K, M, G or T)"
                    )));
                }
            };
            (&s[..i], shift)
        }
        None => (s, 0),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| user_error(format!("size {s:?} is not a number")))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| user_error(format!("size {s:?} is too large")))
}

fn volume_rows(vols: &[ovm::model::Volume]) -> Vec<Vec<String>> {
    vols.iter()
        .map(|v| {
            vec![
                short(v.id),
                v.name.clone(),
                format!("{}", v.size_bytes),
                format!("{}", v.allocated_bytes),
                format!("{:?}", v.format).to_lowercase(),
            ]
        })
        .collect()
}

pub async fn run_repo(cmd: RepoCmd, ctx: &Ctx) -> anyhow::Result<()> {
    let mgr = &ctx.mgr;
    let human = ctx.format == Format::Human;
    match cmd {
        RepoCmd::Add {
            pool,
            name,
            path,
            create,
            plugin,
        } => {
            let job = mgr
                .register_repository(&pool, &plugin, &name, &path, create)
                .await?;
            let id = wait(&job, human).await?;
            let r = mgr.find_repository(id)?;
            if human {
                outln!(
                    "registered repository {} ({}) at {}",
                    r.name,
                    r.id,
                    r.location
                );
            } else {
                output::json(&r)?;
            }
        }
        RepoCmd::List => {
            let repos = mgr.repositories();
            if !human {
                return output::json(&repos);
            }
            let rows: Vec<Vec<String>> = repos
                .iter()
                .map(|r| {
                    vec![
                        short(r.id),
                        r.name.clone(),
                        r.plugin.clone(),
                        r.location.clone(),
                    ]
                })
                .collect();
            output::table(&["ID", "NAME", "PLUGIN", "LOCATION"], &rows);
        }
        RepoCmd::Show { repo } => {
            let r = mgr.find_repository(&repo)?;
            let vols = mgr.volumes(&repo).await?;
            if !human {
                return output::json(&serde_json::json!({ "repository": r, "volumes": vols }));
            }
            outln!(
                "repository {} ({}) plugin {} at {}",
                r.name,
                r.id,
                r.plugin,
                r.location
            );
            output::table(
                &["ID", "NAME", "SIZE", "ALLOCATED", "FORMAT"],
                &volume_rows(&vols),
            );
        }
        RepoCmd::Plugins => {
            let plugins = mgr.storage_plugins();
            if !human {
                return output::json(&plugins);
            }
            for p in plugins {
                outln!(
                    "{} {} ({:?}): {:?}",
                    p.name,
                    p.version,
                    p.kind,
                    p.capabilities
                );
            }
        }
    }
    Ok(())
}

pub async fn run_volume(cmd: VolumeCmd, ctx: &Ctx) -> anyhow::Result<()> {
    let mgr = &ctx.mgr;
    let human = ctx.format == Format::Human;
    let show = |repo: &str, id: ovm::VolumeId| {
        let repo = repo.to_string();
        let mgr = mgr.clone();
        async move {
            let v = mgr.find_volume(&repo, &id.to_string()).await?;
            if human {
                outln!(
                    "volume {} ({}): {} bytes, {} allocated",
                    v.name,
                    v.id,
                    v.size_bytes,
                    v.allocated_bytes
                );
            } else {
                output::json(&v)?;
            }
            anyhow::Ok(())
        }
    };
    match cmd {
        VolumeCmd::Create { repo, name, size } => {
            let id = wait(
                &mgr.create_volume(&repo, VolumeSpec::raw(name, parse_size(&size)?))
                    .await?,
                human,
            )
            .await?;
            show(&repo, id).await?;
        }
        VolumeCmd::Clone { repo, source, name } => {
            let id = wait(&mgr.clone_volume(&repo, &source, &name).await?, human).await?;
            show(&repo, id).await?;
        }
        VolumeCmd::Resize {
            repo,
            volume,
            size,
            shrink,
        } => {
            wait(
                &mgr.resize_volume(&repo, &volume, parse_size(&size)?, shrink)
                    .await?,
                human,
            )
            .await?;
            let v = mgr.find_volume(&repo, &volume).await?;
            show(&repo, v.id).await?;
        }
        VolumeCmd::Delete { repo, volume } => {
            wait(&mgr.delete_volume(&repo, &volume).await?, human).await?;
            if human {
                outln!("deleted volume {volume}");
            }
        }
        VolumeCmd::List { repo } => {
            let vols = mgr.volumes(&repo).await?;
            if !human {
                return output::json(&vols);
            }
            output::table(
                &["ID", "NAME", "SIZE", "ALLOCATED", "FORMAT"],
                &volume_rows(&vols),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert!(parse_size("10X").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
