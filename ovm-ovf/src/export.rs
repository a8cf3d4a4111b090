//! Writing OVA archives: descriptor, SHA-256 manifest, then the disks (streamOptimized
//! VMDK or raw). Built in a staging directory beside the output and renamed into place,
//! so a failure leaves nothing behind.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::disk::{self, vmdk};
use crate::error::{OvfError, Result};
use crate::manifest::{DigestAlgorithm, Manifest, digest_hex};
use crate::model::{Capacity, Envelope, FileReference, OvfVersion};

/// How disks are stored in an exported OVA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskExportFormat {
    /// streamOptimized VMDK (compressed; what VMware, VirtualBox and Oracle VM import).
    StreamOptimizedVmdk,
    /// The raw image as is.
    Raw,
}

impl DiskExportFormat {
    /// The format a front end's `raw` switch asks for: raw images when set, else VMDK.
    pub fn raw_if(raw: bool) -> Self {
        if raw {
            Self::Raw
        } else {
            Self::StreamOptimizedVmdk
        }
    }
}

/// A disk to export: a raw image file for a `DiskSection` disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportDisk {
    /// The disk's `ovf:diskId` in the envelope.
    pub disk_id: String,
    /// A raw image.
    pub source: PathBuf,
    /// Its guest-visible size.
    pub capacity_bytes: u64,
}

/// Format URI of streamOptimized VMDK.
pub const VMDK_STREAM_URI: &str =
    "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";
/// Format URI used for raw images (as oVirt writes).
pub const RAW_URI: &str = "http://en.wikipedia.org/wiki/Byte";

fn io(ctx: impl Into<String>) -> impl FnOnce(io::Error) -> OvfError {
    let ctx = ctx.into();
    move |e| OvfError::io(ctx, e)
}

/// Writes `env` and `disks` as an OVA at `out` (refused if it exists). The envelope's
/// References and the disks' fileRef, capacity and format are set from `disks`.
pub fn write_ova(
    out: &Path,
    env: &Envelope,
    disks: &[ExportDisk],
    format: DiskExportFormat,
    version: OvfVersion,
) -> Result<()> {
    if out.exists() {
        return Err(OvfError::io(
            format!("{} already exists", out.display()),
            io::Error::from(io::ErrorKind::AlreadyExists),
        ));
    }
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."));
    let stem = out
        .file_stem()
        .and_then(|s| s.to_str())
        .map(crate::ova::safe_file_stem)
        .unwrap_or_else(|| "package".into());
    let staging = dir.join(format!(
        ".ovm-export-{}-{:x}",
        std::process::id(),
        disk::unique()
    ));
    std::fs::create_dir(&staging).map_err(io(format!("creating {}", staging.display())))?;
    let result = build(out, &staging, &stem, env, disks, format, version);
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn build(
    out: &Path,
    staging: &Path,
    stem: &str,
    env: &Envelope,
    disks: &[ExportDisk],
    format: DiskExportFormat,
    version: OvfVersion,
) -> Result<()> {
    let mut env = env.clone();
    env.references.clear();
    let mut files: Vec<(String, PathBuf, String)> = Vec::new();
    for (i, d) in disks.iter().enumerate() {
        let n = i + 1;
        let (href, uri) = match format {
            DiskExportFormat::StreamOptimizedVmdk => {
                (format!("{stem}-disk{n}.vmdk"), VMDK_STREAM_URI)
            }
            DiskExportFormat::Raw => (format!("{stem}-disk{n}.img"), RAW_URI),
        };
        let staged = staging.join(&href);
        let mut input = BufReader::new(
            File::open(&d.source).map_err(io(format!("opening {}", d.source.display())))?,
        );
        let (size, sha) = match format {
            DiskExportFormat::StreamOptimizedVmdk => {
                let mut w = BufWriter::new(
                    File::create(&staged).map_err(io(format!("creating {}", staged.display())))?,
                );
                let written =
                    vmdk::write_stream_optimized(&mut input, d.capacity_bytes, &href, &mut w)
                        .map_err(io(format!("writing {href}")))?;
                w.flush().map_err(io(format!("writing {href}")))?;
                (written.size, written.sha256)
            }
            DiskExportFormat::Raw => {
                let mut f =
                    File::create(&staged).map_err(io(format!("creating {}", staged.display())))?;
                let mut h = crate::manifest::Hasher::new(DigestAlgorithm::Sha256);
                let mut buf = vec![0u8; 1 << 20];
                let mut size = 0u64;
                loop {
                    let k = disk::read_full(&mut input, &mut buf)
                        .map_err(io(format!("reading {}", d.source.display())))?;
                    if k == 0 {
                        break;
                    }
                    h.update(&buf[..k]);
                    f.write_all(&buf[..k])
                        .map_err(io(format!("writing {href}")))?;
                    size += k as u64;
                }
                (size, h.finish_hex())
            }
        };
        let file_id = format!("file{n}");
        env.references.push(FileReference {
            id: file_id.clone(),
            href: href.clone(),
            size: Some(size),
            compression: None,
            chunk_size: None,
            extra_attrs: Vec::new(),
        });
        let disk = env
            .disk_section
            .as_mut()
            .and_then(|s| s.disks.iter_mut().find(|x| x.disk_id == d.disk_id))
            .ok_or_else(|| OvfError::DanglingReference {
                what: "export".into(),
                target: "Disk".into(),
                id: d.disk_id.clone(),
            })?;
        disk.file_ref = Some(file_id);
        disk.capacity = Capacity::Value(d.capacity_bytes);
        disk.capacity_units = None;
        disk.format = Some(uri.into());
        files.push((href, staged, sha));
    }
    let descriptor = crate::write::write(&env, version);
    let ovf_name = format!("{stem}.ovf");
    let mf_name = format!("{stem}.mf");
    let mut lines = vec![(
        ovf_name.clone(),
        DigestAlgorithm::Sha256,
        digest_hex(DigestAlgorithm::Sha256, descriptor.as_bytes()),
    )];
    lines.extend(
        files
            .iter()
            .map(|(h, _, sha)| (h.clone(), DigestAlgorithm::Sha256, sha.clone())),
    );
    let manifest = Manifest::render(&lines);

    let tmp = staging.join(format!("{stem}.ova.partial"));
    let f = File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
    let mut tar = tar::Builder::new(BufWriter::new(f));
    let mut append = |name: &str, size: u64, data: &mut dyn io::Read| -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mtime(0);
        tar.append_data(&mut h, name, data)
            .map_err(io(format!("writing {name} into the OVA")))
    };
    append(
        &ovf_name,
        descriptor.len() as u64,
        &mut descriptor.as_bytes(),
    )?;
    append(&mf_name, manifest.len() as u64, &mut manifest.as_bytes())?;
    for (href, staged, _) in &files {
        let size = std::fs::metadata(staged)
            .map_err(io(format!("reading {}", staged.display())))?
            .len();
        let mut f = BufReader::new(
            File::open(staged).map_err(io(format!("opening {}", staged.display())))?,
        );
        append(href, size, &mut f)?;
    }
    let w = tar.into_inner().map_err(io("finishing the OVA"))?;
    let f = w
        .into_inner()
        .map_err(|e| OvfError::io("finishing the OVA", e.into_error()))?;
    f.sync_all().map_err(io("finishing the OVA"))?;
    std::fs::rename(&tmp, out).map_err(io(format!("placing {}", out.display())))?;
    Ok(())
}

/// Exports a template whose volumes live in `plugin` as an OVA at `out`: its spec
/// becomes the descriptor (CPU, memory, disks, NICs on networks named by
/// `network_name`), its raw volumes the disks.
pub async fn export_template(
    plugin: &dyn ovm_core::storage::StoragePlugin,
    template: &ovm_core::model::Template,
    network_name: &(dyn Fn(ovm_core::NetworkId) -> String + Sync),
    out: &Path,
    format: DiskExportFormat,
) -> Result<()> {
    use ovm_core::model::VolumeFormat;
    use ovm_core::storage::VolumeAccess;
    let mut disks = Vec::new();
    for (i, v) in template.volumes.iter().enumerate() {
        let vol = plugin.volume(template.repo, *v).await?;
        let source = match plugin.volume_access(template.repo, *v).await? {
            VolumeAccess::Path {
                path,
                format: VolumeFormat::Raw,
            } => path,
            other => {
                return Err(OvfError::Core(ovm_core::Error::unsupported(
                    format!("exporting a volume reached as {other:?}"),
                    plugin.info().name,
                )));
            }
        };
        disks.push(ExportDisk {
            disk_id: format!("disk{}", i + 1),
            source,
            capacity_bytes: vol.size_bytes,
        });
    }
    let caps: Vec<(String, u64)> = disks
        .iter()
        .map(|d| (d.disk_id.clone(), d.capacity_bytes))
        .collect();
    let networks: Vec<String> = template
        .spec
        .nics
        .iter()
        .map(|n| network_name(n.network))
        .collect();
    let env =
        crate::mapping::envelope_for_spec(&template.spec, &caps, &networks, &template.description);
    let out = out.to_owned();
    tokio::task::spawn_blocking(move || write_ova(&out, &env, &disks, format, OvfVersion::V1))
        .await
        .map_err(|_| OvfError::disk("export", "export task failed"))?
}
