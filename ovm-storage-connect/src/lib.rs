//! ovm Storage Connect plugins.
//!
//! - [`fs::FsPlugin`] (`fs`): repositories on a mounted POSIX file system (local disk, NFS,
//!   OCFS2) with the Oracle VM layout, sparse raw volumes, reflink or sparse-copy clones,
//!   qcow2/VMDK import and export through `qemu-img`, and crash-safe metadata.
//!
//! Plugins implement [`ovm_core::StoragePlugin`] and pass
//! [`ovm_core::conformance::storage`]. A manager finds them by name in an
//! [`ovm_core::storage::PluginRegistry`]; [`register_builtin`] fills one with this crate's
//! plugins and the simulator.

pub mod copy;
pub mod durable;
pub mod error;
pub mod fs;
pub mod qemu;

use std::sync::Arc;

pub use error::{FS_PLUGIN_NAME, FsError};
pub use fs::{CloneMethod, CloneMode, FsConfig, FsPlugin};
use ovm_core::Result;
use ovm_core::sim::storage::SimStorage;
use ovm_core::storage::{PluginRegistry, StoragePlugin};

/// The built-in plugins — `fs` with `config`, and the in-memory `sim` — as a manager's
/// `ManagerOptions::storage` takes them.
pub fn builtin_plugins(config: FsConfig) -> Vec<Arc<dyn StoragePlugin>> {
    vec![Arc::new(FsPlugin::new(config)), Arc::new(SimStorage::new())]
}

/// Registers the built-in plugins ([`builtin_plugins`]) in `registry`; a name already
/// taken there is an `AlreadyExists` error.
pub fn register_builtin(registry: &PluginRegistry, config: FsConfig) -> Result<()> {
    builtin_plugins(config)
        .into_iter()
        .try_for_each(|p| registry.register(p))
}

#[cfg(test)]
mod tests {
    use ovm_core::storage::StorageCapability;

    use super::*;

    #[test]
    fn builtin_plugins_register_once_and_answer_by_capability() {
        let registry = PluginRegistry::new();
        register_builtin(&registry, FsConfig::default()).expect("register");
        assert_eq!(registry.names(), vec!["fs".to_string(), "sim".to_string()]);
        let err = register_builtin(&registry, FsConfig::default()).expect_err("twice");
        assert_eq!(err.code(), "already_exists");
        assert!(
            registry
                .get_with("fs", StorageCapability::ReflinkClone)
                .is_ok()
        );
        let copy_only = PluginRegistry::new();
        copy_only
            .register(Arc::new(FsPlugin::new(FsConfig {
                clone_mode: CloneMode::CopyOnly,
                ..FsConfig::default()
            })))
            .expect("register");
        let err = copy_only
            .get_with("fs", StorageCapability::ReflinkClone)
            .err()
            .expect("no reflink when copying only");
        assert_eq!(err.code(), "unsupported");
        assert!(err.to_string().contains("reflink clone"), "{err}");
        assert_eq!(
            registry.with_capability(StorageCapability::Import(
                ovm_core::model::VolumeFormat::Qcow2
            )),
            vec!["fs".to_string()]
        );
        assert_eq!(
            registry.get("nfs").err().map(|e| e.code()),
            Some("not_found")
        );
    }
}
