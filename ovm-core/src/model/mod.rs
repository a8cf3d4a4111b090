//! The model: plain serde types with typed ids. No behaviour beyond validation.

mod event;
mod instance;
mod job;
mod network;
mod pool;
mod storage;
mod template;
mod vm;
mod vm_state;

pub use event::{Event, EventQuery, Outcome};
pub use instance::ManagerInstance;
pub use job::{Job, JobState, JobStep, Progress, StepState, Undo, UndoRecord};
pub use network::{Network, NetworkRole};
pub use pool::{
    AgentEndpoint, DpmSettings, DrsSettings, HypervisorKind, PlacementSettings, PoolPolicies,
    Server, ServerPool, ServerRole, ServerState,
};
pub use storage::{Repository, Volume, VolumeFormat};
pub use template::{Assembly, Template};
pub use vm::{BootSource, DiskSpec, DomainType, NicSpec, PreferredMode, Vm, VmSpec, VmState};
pub use vm_state::VmOp;

use crate::{Error, Result};

/// Longest accepted object name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Checks a user-given object name: non-empty, at most 255 bytes, in Unicode normal form
/// C, no leading or trailing whitespace, no control, format (bidi, zero-width) or
/// no-break space characters, no `/` and not `.` or `..` (names become file and domain
/// names on backends, and people must be able to tell two names apart by reading them).
/// [`normalize_name`] turns what a user typed into such a name.
pub fn validate_name(field: &str, name: &str) -> Result<()> {
    use unicode_normalization::UnicodeNormalization;
    let reason = if name.is_empty() {
        "must not be empty".to_string()
    } else if name.len() > MAX_NAME_LEN {
        "is longer than 255 bytes".to_string()
    } else if name.trim() != name {
        "starts or ends with whitespace".to_string()
    } else if let Some(c) = name.chars().find(|c| c.is_control()) {
        format!("contains the control character U+{:04X}", c as u32)
    } else if let Some(c) = name.chars().find(|c| is_invisible(*c)) {
        format!(
            "contains the invisible or direction-changing character U+{:04X}",
            c as u32
        )
    } else if name.contains('/') || name.contains('\\') {
        "contains a path separator".to_string()
    } else if name == "." || name == ".." {
        "is a relative path component".to_string()
    } else if !name.nfc().eq(name.chars()) {
        "is not in Unicode normal form C".to_string()
    } else {
        return Ok(());
    };
    Err(Error::invalid(field, format!("{name:?} {reason}")))
}

/// A user-given name in the form it is stored and compared in (Unicode NFC), or why it
/// cannot be a name (see [`validate_name`]).
pub fn normalize_name(field: &str, name: &str) -> Result<String> {
    use unicode_normalization::UnicodeNormalization;
    let n: String = name.nfc().collect();
    validate_name(field, &n)?;
    Ok(n)
}

/// Characters that change how text reads without being seen: format characters
/// (bidi embeddings, overrides and isolates, zero-width spaces and joiners, the BOM, soft
/// hyphen), no-break and other special spaces, and line or paragraph separators.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00A0}' | '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}'
        | '\u{1680}' | '\u{17B4}' | '\u{17B5}' | '\u{180B}'..='\u{180F}'
        | '\u{2000}'..='\u{200F}' | '\u{2028}'..='\u{202F}' | '\u{205F}'..='\u{206F}'
        | '\u{3000}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FFF0}'..='\u{FFF8}' | '\u{E0000}'..='\u{E007F}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("vm.name", "web-01").is_ok());
        assert!(validate_name("vm.name", "web 01 ünïcode").is_ok());
        for bad in [
            "",
            "a/b",
            "..",
            ".",
            "a\0b",
            "a\nb",
            &"x".repeat(256),
            "   ",
            " web",
            "web ",
            "\tweb",
            "we\u{202E}b",
            "we\u{200B}b",
            "we\u{00A0}b",
            "we\u{2066}b",
            "\u{FEFF}web",
            "e\u{0301}", // decomposed é: not NFC
        ] {
            let err = validate_name("vm.name", bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidSpec { ref field, .. } if field == "vm.name"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn names_are_normalised_to_nfc() {
        assert_eq!(normalize_name("f", "e\u{0301}").unwrap(), "\u{e9}");
        assert!(normalize_name("f", " padded").is_err());
        assert_eq!(normalize_name("f", "plain").unwrap(), "plain");
    }
}
