//! The OVA reader on arbitrary archives: no panic, no hang, nothing written outside the
//! target directory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovm_ovf::Limits;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = std::env::temp_dir().join(format!("ovm-ovf-fuzz-{}", std::process::id())).canonicalize().or_else(|_| {
        let d = std::env::temp_dir().join(format!("ovm-ovf-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).map(|_| d)
    }) else {
        return;
    };
    let ova = dir.join("input.ova");
    let out = dir.join("out");
    let _ = std::fs::remove_dir_all(&out);
    if std::fs::create_dir_all(&out).is_err() || std::fs::write(&ova, data).is_err() {
        return;
    }
    let limits = Limits {
        max_disk_bytes: 64 << 20,
        ..Limits::default()
    };
    let _ = ovm_ovf::inspect::summary_json(&ova, &limits);
    let result = ovm_ovf::ova::extract_to_dir(&ova, &out, &limits, &mut |_, _| {});
    if result.is_err() {
        let left = std::fs::read_dir(&out).map(|d| d.count()).unwrap_or(0);
        assert_eq!(left, 0, "a failed import left files behind");
    }
});
