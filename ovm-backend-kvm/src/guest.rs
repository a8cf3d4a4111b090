//! The bundled test guest: built by build.rs from `guest/` with the system gcc and ld.
//!
//! `BUILT_TEST_GUEST` is where the build put it; `TEST_GUEST_ELF` is the same file embedded
//! in the library, so a binary moved to another machine still has it: `test_guest_path`
//! returns a path that exists, installing the embedded copy if needed.

use std::path::PathBuf;

/// Path of the guest as built (valid on the build machine).
pub const BUILT_TEST_GUEST: &str = env!("OVM_TEST_GUEST");

/// The guest image.
pub static TEST_GUEST_ELF: &[u8] = include_bytes!(env!("OVM_TEST_GUEST"));

/// Environment variable that overrides the guest image path.
pub const TEST_GUEST_ENV: &str = "OVM_TEST_GUEST";

/// A path to the test guest: `$OVM_TEST_GUEST` if set, the built file if it is still
/// there and unchanged, else the embedded copy written to the temp directory.
pub fn test_guest_path() -> std::io::Result<PathBuf> {
    if let Some(p) = std::env::var_os(TEST_GUEST_ENV) {
        return Ok(PathBuf::from(p));
    }
    let built = PathBuf::from(BUILT_TEST_GUEST);
    if std::fs::read(&built).is_ok_and(|b| b == TEST_GUEST_ELF) {
        return Ok(built);
    }
    let hash = TEST_GUEST_ELF
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    let path = std::env::temp_dir().join(format!("ovm-test-guest-{hash:016x}.elf"));
    if std::fs::read(&path).is_ok_and(|b| b == TEST_GUEST_ELF) {
        return Ok(path);
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, TEST_GUEST_ELF)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}
