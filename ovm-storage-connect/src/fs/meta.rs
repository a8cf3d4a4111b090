//! Per-volume metadata: one small JSON file per volume in `.ovm/volumes/<uuid>.json`,
//! always replaced whole (written aside, then renamed over).
//!
//! What the file system already knows is not repeated: the virtual size is the data file's
//! length and the allocated bytes are its blocks.

use std::path::Path;

use ovm_core::Result;
use ovm_core::id::{Timestamp, VolumeId};
use ovm_core::model::VolumeFormat;
use serde::{Deserialize, Serialize};

use super::identity::FORMAT_VERSION;
use super::layout::Layout;
use crate::durable;
use crate::error::FsError;

/// Largest metadata file accepted.
const MAX_META_BYTES: u64 = 64 << 10;

/// How a volume came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Origin {
    /// Created empty.
    Created,
    /// Cloned from its parent.
    Clone,
    /// A snapshot of its parent.
    Snapshot,
    /// Imported from an image file of this format.
    Import {
        /// The image's format.
        format: VolumeFormat,
    },
}

/// The content of a volume's metadata file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeMeta {
    /// On-disk format version.
    pub format_version: u32,
    /// The volume's id (also its file names).
    pub id: VolumeId,
    /// Name, unique in the repository.
    pub name: String,
    /// Format of the data file (always raw for this plugin).
    pub format: VolumeFormat,
    /// The volume it was cloned or snapshotted from.
    #[serde(default)]
    pub parent: Option<VolumeId>,
    /// How it came to be.
    pub origin: Origin,
    /// When it was made.
    pub created_at: Timestamp,
}

impl VolumeMeta {
    /// Metadata of a new raw volume.
    pub fn new(name: &str, parent: Option<VolumeId>, origin: Origin) -> Self {
        VolumeMeta {
            format_version: FORMAT_VERSION,
            id: VolumeId::new(),
            name: name.to_string(),
            format: VolumeFormat::Raw,
            parent,
            origin,
            created_at: Timestamp::now(),
        }
    }

    /// Reads and checks one metadata file.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = durable::read_small(path, MAX_META_BYTES)?;
        let corrupt = |reason: String| FsError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let meta: VolumeMeta = serde_json::from_slice(&bytes)
            .map_err(|e| corrupt(format!("not volume metadata: {e}")))?;
        if meta.format_version > FORMAT_VERSION {
            return Err(corrupt(format!(
                "on-disk format {} is newer than this ovm's {FORMAT_VERSION}",
                meta.format_version
            ))
            .into());
        }
        let expected = format!("{}.json", meta.id);
        if path.file_name().and_then(|n| n.to_str()) != Some(expected.as_str()) {
            return Err(corrupt(format!("holds volume {} (file name mismatch)", meta.id)).into());
        }
        ovm_core::model::validate_name("volume.name", &meta.name)
            .map_err(|e| corrupt(e.to_string()))?;
        Ok(meta)
    }

    /// Writes this metadata atomically to its place in `layout`.
    pub fn write(&self, layout: &Layout) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self)?;
        durable::write_atomic(&layout.tmp_dir(), &layout.meta(self.id), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_is_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(dir.path().to_path_buf());
        layout.ensure_dirs().expect("dirs");
        let meta = VolumeMeta::new("disk", Some(VolumeId::new()), Origin::Clone);
        meta.write(&layout).expect("write");
        assert_eq!(VolumeMeta::read(&layout.meta(meta.id)).expect("read"), meta);

        let other = layout.meta(VolumeId::new());
        std::fs::copy(layout.meta(meta.id), &other).expect("copy");
        let err = VolumeMeta::read(&other).expect_err("mismatch");
        assert!(err.to_string().contains("file name mismatch"), "{err}");

        let json = serde_json::to_string(&VolumeMeta {
            name: "../etc".into(),
            ..meta.clone()
        })
        .expect("json");
        std::fs::write(layout.meta(meta.id), json).expect("write");
        assert!(
            VolumeMeta::read(&layout.meta(meta.id)).is_err(),
            "bad names are refused"
        );
    }
}
