//! The descriptor parser, manifest parser and writer on arbitrary bytes: no panic, no
//! hang; whatever parses must survive a write/parse round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovm_ovf::{Limits, OvfVersion};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let _ = ovm_ovf::manifest::Manifest::parse(data);
    if let Ok(p) = ovm_ovf::parse::parse_unvalidated(data, &limits) {
        let _ = ovm_ovf::parse::validate(&p.envelope, &limits, &mut Vec::new());
        for v in [OvfVersion::V1, OvfVersion::V2] {
            let text = ovm_ovf::write::write(&p.envelope, v);
            let again = ovm_ovf::parse::parse_unvalidated(text.as_bytes(), &limits)
                .expect("written descriptor must parse");
            assert_eq!(ovm_ovf::write::write(&again.envelope, v), text);
        }
    }
});
