//! Where things live in a file-server repository, and which repository paths are accepted.
//!
//! ```text
//! <repository>/
//!   .ovsrepo                  identity: uuid, name, owning pool, format version (JSON)
//!   VirtualDisks/<uuid>.img   volumes: sparse raw images
//!   VirtualMachines/          VM configuration (Oracle VM layout; kept for the manager)
//!   Templates/  Assemblies/  ISOs/
//!   .ovm/lock                 held with flock() by the manager that has the repository open
//!   .ovm/volumes/<uuid>.json  one metadata file per volume (name, parent, origin)
//!   .ovm/tmp/                 work in progress; emptied whenever the repository is opened
//! ```

use std::path::{Component, Path, PathBuf};

use ovm_core::id::VolumeId;
use ovm_core::{Error, Result};

use crate::error::io_err;

/// The identity file at the top of a repository.
pub const IDENTITY_FILE: &str = ".ovsrepo";
/// Volumes.
pub const VIRTUAL_DISKS: &str = "VirtualDisks";
/// The directories of an Oracle VM repository.
pub const ORACLE_VM_DIRS: [&str; 5] = [
    VIRTUAL_DISKS,
    "VirtualMachines",
    "Templates",
    "Assemblies",
    "ISOs",
];
/// ovm's own files.
pub const OVM_DIR: &str = ".ovm";
/// The lock file, under `OVM_DIR`.
pub const LOCK_FILE: &str = "lock";
/// Volume metadata, under `OVM_DIR`.
pub const VOLUMES_DIR: &str = "volumes";
/// Work in progress, under `OVM_DIR`.
pub const TMP_DIR: &str = "tmp";

/// Entries a directory may hold and still receive a new repository.
const ALLOWED_IN_NEW_REPOSITORY: [&str; 2] = [OVM_DIR, "lost+found"];

/// The paths of one repository.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout of the repository at `root` (a resolved path).
    pub fn new(root: PathBuf) -> Self {
        Layout { root }
    }

    /// The repository directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `.ovsrepo`.
    pub fn identity(&self) -> PathBuf {
        self.root.join(IDENTITY_FILE)
    }

    /// `.ovm`.
    pub fn ovm_dir(&self) -> PathBuf {
        self.root.join(OVM_DIR)
    }

    /// `.ovm/lock`.
    pub fn lock(&self) -> PathBuf {
        self.ovm_dir().join(LOCK_FILE)
    }

    /// `.ovm/volumes`.
    pub fn volumes_dir(&self) -> PathBuf {
        self.ovm_dir().join(VOLUMES_DIR)
    }

    /// `.ovm/tmp`.
    pub fn tmp_dir(&self) -> PathBuf {
        self.ovm_dir().join(TMP_DIR)
    }

    /// `VirtualDisks`.
    pub fn disks_dir(&self) -> PathBuf {
        self.root.join(VIRTUAL_DISKS)
    }

    /// The data file of a volume.
    pub fn disk(&self, id: VolumeId) -> PathBuf {
        self.disks_dir().join(format!("{id}.img"))
    }

    /// The metadata file of a volume.
    pub fn meta(&self, id: VolumeId) -> PathBuf {
        self.volumes_dir().join(format!("{id}.json"))
    }

    /// The temporary data file of a volume being made.
    pub fn tmp_disk(&self, id: VolumeId) -> PathBuf {
        self.tmp_dir().join(format!("{id}.img"))
    }

    /// The temporary metadata file of a volume being made.
    pub fn tmp_meta(&self, id: VolumeId) -> PathBuf {
        self.tmp_dir().join(format!("{id}.json"))
    }

    /// Every directory of the layout, parents first.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = ORACLE_VM_DIRS.iter().map(|d| self.root.join(d)).collect();
        dirs.push(self.ovm_dir());
        dirs.push(self.volumes_dir());
        dirs.push(self.tmp_dir());
        dirs
    }

    /// Creates the missing directories of the layout; refuses any that is a symlink or not
    /// a directory (a symlinked `VirtualDisks` could send writes outside the repository).
    pub fn ensure_dirs(&self) -> Result<()> {
        for dir in self.dirs() {
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Error::invalid(
                        "repository.location",
                        format!(
                            "{} must be a directory, not a symlink or a file",
                            dir.display()
                        ),
                    ));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir(&dir).map_err(|e| io_err("create directory", &dir, e))?;
                    if let Some(parent) = dir.parent() {
                        crate::durable::fsync_dir(parent)?;
                    }
                }
                Err(e) => return Err(io_err("stat", &dir, e)),
            }
        }
        Ok(())
    }

    /// Refuses a directory that holds anything but an unfinished layout: a new repository
    /// never takes over files it did not make.
    pub fn check_empty_for_create(&self) -> Result<()> {
        let entries = std::fs::read_dir(&self.root).map_err(|e| io_err("list", &self.root, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_err("list", &self.root, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let acceptable = if ORACLE_VM_DIRS.contains(&name.as_ref()) {
                // Left by an earlier create that did not finish: fine while empty.
                std::fs::read_dir(entry.path()).is_ok_and(|mut d| d.next().is_none())
            } else {
                ALLOWED_IN_NEW_REPOSITORY.contains(&name.as_ref())
            };
            if !acceptable {
                return Err(Error::InvalidState {
                    kind: "repository",
                    id: self.root.display().to_string(),
                    state: format!("a directory that already holds {name:?}"),
                    op: "create a repository (it needs an empty directory)".into(),
                });
            }
        }
        Ok(())
    }
}

/// Checks a repository location as given: an absolute path, valid UTF-8 (it is a `&str`),
/// no NUL, no `..` component.
pub fn check_location_syntax(location: &str) -> Result<PathBuf> {
    let bad = |reason: &str| {
        Err(Error::invalid(
            "repository.location",
            format!("{location:?} {reason}"),
        ))
    };
    if location.is_empty() {
        return bad("is empty");
    }
    if location.contains('\0') {
        return bad("contains a NUL byte");
    }
    let path = PathBuf::from(location);
    if !path.is_absolute() {
        return bad("is not an absolute path");
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return bad("contains a '..' component");
    }
    Ok(path)
}

/// Resolves a location that must exist to its real path (symlinks followed), and refuses
/// it unless it is a directory inside one of `roots` (when roots are configured).
pub fn resolve_existing(location: &str, roots: &[PathBuf]) -> Result<PathBuf> {
    let path = check_location_syntax(location)?;
    let real = match std::fs::canonicalize(&path) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::not_found("repository", location));
        }
        Err(e) => return Err(io_err("resolve", &path, e)),
    };
    check_inside_roots(location, &real, roots)?;
    if !real.is_dir() {
        return Err(Error::invalid(
            "repository.location",
            format!("{location:?} is not a directory"),
        ));
    }
    Ok(real)
}

/// Resolves a location for a new repository: the location itself if it exists (as
/// `resolve_existing`), else its existing parent's real path joined with the new name.
pub fn resolve_for_create(location: &str, roots: &[PathBuf]) -> Result<PathBuf> {
    let path = check_location_syntax(location)?;
    match std::fs::symlink_metadata(&path) {
        Ok(_) => resolve_existing(location, roots),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
                return Err(Error::invalid(
                    "repository.location",
                    format!("{location:?} has no parent directory"),
                ));
            };
            let parent_real = std::fs::canonicalize(parent).map_err(|e| {
                Error::invalid(
                    "repository.location",
                    format!("{location:?}: parent {}: {e}", parent.display()),
                )
            })?;
            let real = parent_real.join(name);
            check_inside_roots(location, &real, roots)?;
            Ok(real)
        }
        Err(e) => Err(io_err("stat", &path, e)),
    }
}

/// Refuses `real` (a resolved path) unless it lies inside one of `roots`; with no roots
/// configured, every path is accepted.
fn check_inside_roots(location: &str, real: &Path, roots: &[PathBuf]) -> Result<()> {
    if roots.is_empty() {
        return Ok(());
    }
    let inside = roots
        .iter()
        .any(|root| std::fs::canonicalize(root).is_ok_and(|root| real.starts_with(&root)));
    if inside {
        Ok(())
    } else {
        let shown: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        Err(Error::invalid(
            "repository.location",
            format!(
                "{location:?} resolves to {}, outside the configured roots [{}] \
                 (a symlink out of a root is refused)",
                real.display(),
                shown.join(", ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_syntax_is_checked() {
        for bad in ["", "relative/path", "/a/../b", "/a/\0b"] {
            let err = check_location_syntax(bad).expect_err(bad);
            assert_eq!(err.code(), "invalid_spec", "{bad:?}: {err}");
        }
        assert!(check_location_syntax("/srv/repo").is_ok());
    }

    #[test]
    fn a_symlink_out_of_the_root_is_refused() {
        let root = tempfile::tempdir().expect("root");
        let outside = tempfile::tempdir().expect("outside");
        let link = root.path().join("escape");
        std::os::unix::fs::symlink(outside.path(), &link).expect("symlink");
        let roots = vec![root.path().to_path_buf()];
        let loc = link.to_str().expect("utf-8");
        let err = resolve_existing(loc, &roots).expect_err("escape");
        assert!(
            err.to_string().contains("outside the configured roots"),
            "{err}"
        );
        let err = resolve_for_create(&format!("{loc}/repo"), &roots).expect_err("escape");
        assert!(
            err.to_string().contains("outside the configured roots"),
            "{err}"
        );

        let inner = root.path().join("inner");
        std::fs::create_dir(&inner).expect("mkdir");
        let inner_link = root.path().join("inner-link");
        std::os::unix::fs::symlink(&inner, &inner_link).expect("symlink");
        let real = resolve_existing(inner_link.to_str().expect("utf-8"), &roots)
            .expect("a symlink inside the root is fine");
        assert_eq!(real, std::fs::canonicalize(&inner).expect("canonical"));
    }

    #[test]
    fn a_missing_location_is_not_found_and_a_file_is_refused() {
        let root = tempfile::tempdir().expect("root");
        let roots = vec![root.path().to_path_buf()];
        let missing = root.path().join("missing");
        let err = resolve_existing(missing.to_str().expect("utf-8"), &roots).expect_err("missing");
        assert_eq!(err.code(), "not_found");
        let file = root.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        let err = resolve_existing(file.to_str().expect("utf-8"), &roots).expect_err("file");
        assert_eq!(err.code(), "invalid_spec");
    }
}
