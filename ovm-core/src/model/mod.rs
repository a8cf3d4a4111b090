//! The model: plain serde types with typed ids. No behaviour beyond validation.

mod event;
mod job;
mod network;
mod pool;
mod storage;
mod template;
mod vm;

pub use event::{Event, EventQuery, Outcome};
pub use job::{Job, JobState, JobStep, Progress, StepState, Undo, UndoRecord};
pub use network::{Network, NetworkRole};
pub use pool::{
    DpmSettings, DrsSettings, HypervisorKind, PlacementSettings, PoolPolicies, Server, ServerPool,
    ServerRole, ServerState,
};
pub use storage::{Repository, Volume, VolumeFormat};
pub use template::{Assembly, Template};
pub use vm::{BootSource, DiskSpec, DomainType, NicSpec, PreferredMode, Vm, VmSpec, VmState};

use crate::{Error, Result};

/// Longest accepted object name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Checks a user-given object name: non-empty, at most 255 bytes, no control characters,
/// no `/` and not `.` or `..` (names become file and domain names on backends).
pub fn validate_name(field: &str, name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "must not be empty"
    } else if name.len() > MAX_NAME_LEN {
        "longer than 255 bytes"
    } else if name.chars().any(|c| c.is_control()) {
        "contains a control character"
    } else if name.contains('/') || name.contains('\\') {
        "contains a path separator"
    } else if name == "." || name == ".." {
        "is a relative path component"
    } else {
        return Ok(());
    };
    Err(Error::invalid(field, format!("{name:?} {reason}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("vm.name", "web-01").is_ok());
        for bad in ["", "a/b", "..", ".", "a\0b", "a\nb", &"x".repeat(256)] {
            let err = validate_name("vm.name", bad).unwrap_err();
            assert!(matches!(err, Error::InvalidSpec { ref field, .. } if field == "vm.name"));
        }
    }
}
