//! Every file of the shared OVF corpus (`../shared/ovf-corpus`, beside the repository)
//! parses, or fails with the error its content calls for. INDEX.tsv says where each
//! file came from. Skips with a reason when the corpus is absent.

use std::path::PathBuf;

use ovm_ovf::manifest::Manifest;
use ovm_ovf::model::{Capacity, Content};
use ovm_ovf::{HrefPolicy, Limits, OvfError, parse};

fn corpus_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/ovf-corpus");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("skipped: OVF corpus not found at {}", dir.display());
        None
    }
}

fn lax() -> Limits {
    Limits {
        href: HrefPolicy {
            allow_urls: true,
            allow_absolute: false,
            allow_parent: true,
        },
        ..Limits::default()
    }
}

/// What each file's content calls for.
enum Expect {
    /// Parses with default limits.
    Ok,
    /// Names files outside the package (`../`): refused by default, parses when allowed.
    ParentHref,
    /// Refused with the given check.
    Refused(&'static str, fn(&OvfError) -> bool),
}

fn expectation(name: &str) -> Expect {
    use Expect::*;
    match name {
        "proxmox__pve-storage__XEE.ovf" => {
            Refused("DOCTYPE refused", |e| matches!(e, OvfError::DoctypeRefused))
        }
        "glennmatthews__cot__ersatz_ovf_3.0.ovf" => Refused(
            "unsupported version",
            |e| matches!(e, OvfError::UnsupportedVersion { namespace } if namespace.ends_with("/3")),
        ),
        "vmware__govmomi__invalid_neg_chunk.ovf" => Refused(
            "bad File size",
            |e| matches!(e, OvfError::InvalidSize { what, value, .. } if what == "File file1 ovf:size" && value == "abcd"),
        ),
        "vmware__govmomi__negative-size-disk__haoUnOS2VMs.ovf"
        | "vmware__govmomi__negative-out-of-bound-disk__haoUnOS2VMs.ovf" => Refused(
            "negative size",
            |e| matches!(e, OvfError::InvalidSize { reason, .. } if reason == "negative"),
        ),
        "vmware__govmomi__out-of-bounds-disk__haoUnOS2VMs.ovf" => Refused(
            "size over limit",
            |e| matches!(e, OvfError::InvalidSize { value, reason, .. } if value == "9223372036854775808" && reason.contains("exceeds")),
        ),
        "vmware__govmomi__child_uitem_req_true.ovf" => Refused(
            "required unknown item element",
            |e| matches!(e, OvfError::UnknownRequired { element, .. } if element == "rasd:Unknown"),
        ),
        "vmware__govmomi__section_compatibility_neg.ovf" => Refused(
            "required unknown section",
            |e| matches!(e, OvfError::UnknownRequired { element, context } if element == "UnknownSection" && context == "DiskSection"),
        ),
        "vmware__govmomi__http_uri_in_file.ovf" => Refused(
            "URL href",
            |e| matches!(e, OvfError::BadHref { href, .. } if href.starts_with("http://")),
        ),
        // An unrendered build template: the File size is the literal `${SIZE}`.
        "oracle__oracle-linux__OVM_TEMPLATE.ovf" => Refused(
            "placeholder size",
            |e| matches!(e, OvfError::InvalidSize { value, .. } if value == "${SIZE}"),
        ),
        "vmware__govmomi__child_uitem_req_false.ovf"
        | "vmware__govmomi__gzip_compression.ovf"
        | "vmware__govmomi__prod_sec_catnprop.ovf"
        | "vmware__govmomi__valid_bound.ovf" => ParentHref,
        _ => Ok,
    }
}

#[test]
fn every_corpus_file_parses_or_fails_as_its_content_calls_for() {
    let Some(dir) = corpus_dir() else { return };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read corpus dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    let mut checked = 0;
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let bytes = std::fs::read(&path).expect("read corpus file");
        if name == "INDEX.tsv" {
            continue;
        }
        checked += 1;
        if name.ends_with(".mf") {
            let m = Manifest::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!m.entries.is_empty(), "{name}: empty manifest");
            continue;
        }
        match expectation(&name) {
            Expect::Ok => {
                let p = parse(&bytes, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(
                    !p.envelope.content.systems().is_empty() || name.contains("scaleout"),
                    "{name}"
                );
            }
            Expect::ParentHref => {
                let err = parse(&bytes, &Limits::default()).expect_err(&name);
                assert!(matches!(err, OvfError::BadHref { .. }), "{name}: {err}");
                parse(&bytes, &lax()).unwrap_or_else(|e| panic!("{name} (lax hrefs): {e}"));
            }
            Expect::Refused(what, check) => {
                let err = parse(&bytes, &Limits::default()).expect_err(&name);
                assert!(check(&err), "{name}: expected {what}, got {err}");
            }
        }
    }
    assert!(checked >= 40, "only {checked} corpus files found");
    // INDEX.tsv lists every file.
    let index = std::fs::read_to_string(dir.join("INDEX.tsv")).expect("INDEX.tsv");
    assert!(
        index.lines().count() > checked,
        "INDEX.tsv does not list every file"
    );
}

fn read(name: &str) -> Option<Vec<u8>> {
    let dir = corpus_dir()?;
    Some(std::fs::read(dir.join(name)).expect("read corpus file"))
}

#[test]
fn vmware_0_9_dialect() {
    let Some(bytes) = read("glennmatthews__cot__v0.9.ovf") else {
        return;
    };
    let p = parse(&bytes, &Limits::default()).expect("parse");
    let env = p.envelope;
    assert_eq!(env.version, ovm_ovf::OvfVersion::V0_9);
    assert_eq!(env.references[0].size, Some(152576));
    assert_eq!(
        env.disk("vmdisk1").map(|d| &d.capacity),
        Some(&Capacity::Value(1 << 30))
    );
    assert_eq!(
        env.network_section
            .as_ref()
            .map(|n| n.networks[0].name.as_str()),
        Some("bridged")
    );
    let systems = env.content.systems();
    let vs = systems[0];
    assert_eq!(vs.id, "v0.9");
    let items = &vs.hardware[0].items;
    let mem = items
        .iter()
        .find(|i| i.get("ResourceType") == Some("4"))
        .expect("memory item");
    assert_eq!(mem.get("VirtualQuantity"), Some("8192"));
    assert_eq!(mem.get("AllocationUnits"), Some("MegaBytes"));
    assert!(
        vs.annotation
            .as_ref()
            .is_some_and(|a| a.annotation.contains("version 0.9 OVF"))
    );
    assert!(!vs.eulas.is_empty());
}

#[test]
fn chunked_file_and_collection_and_capacity_property() {
    let Some(bytes) = read("vmware__govmomi__nostalgia-chunkdisk.ovf") else {
        return;
    };
    let env = parse(&bytes, &Limits::default()).expect("parse").envelope;
    assert_eq!(env.references[0].chunk_size, Some(7516192768));

    let Some(bytes) = read("vmware__govmomi__disk-capacity-property.ovf") else {
        return;
    };
    let env = parse(&bytes, &Limits::default()).expect("parse").envelope;
    let disk = env.disk("vmdisk_data").expect("disk");
    assert_eq!(disk.capacity, Capacity::Property("disksize".into()));
    let bytes_cap =
        ovm_ovf::parse::disk_capacity_bytes(&env, disk, &Limits::default()).expect("capacity");
    assert_eq!(bytes_cap, 5 << 30);

    let Some(bytes) = read("vmware__govmomi__scaleout.ovf") else {
        return;
    };
    let env = parse(&bytes, &Limits::default()).expect("parse").envelope;
    let Content::Collection(c) = &env.content else {
        panic!("not a collection")
    };
    assert_eq!(c.members.len(), 1);
    assert!(
        c.extra
            .elements
            .iter()
            .any(|e| e.name.local == "ScaleOutSection")
    );
}

#[test]
fn optional_unknown_sections_are_warnings() {
    let Some(bytes) = read("vmware__govmomi__unknownsections.ovf") else {
        return;
    };
    let p = parse(&bytes, &Limits::default()).expect("parse");
    assert!(
        p.warnings.iter().any(|w| w.contains("FooSection")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn oracle_vm_template_with_placeholders_filled() {
    let Some(bytes) = read("oracle__oracle-linux__OVM_TEMPLATE.ovf") else {
        return;
    };
    let text = String::from_utf8(bytes)
        .expect("utf8")
        .replace("${SIZE}", "1048576")
        .replace("${CAPACITY}", "10737418240");
    let env = parse(text.as_bytes(), &Limits::default())
        .expect("parse")
        .envelope;
    let Content::Collection(c) = &env.content else {
        panic!("not a collection")
    };
    let Content::System(vs) = &c.members[0] else {
        panic!("not a system")
    };
    assert!(
        vs.extra
            .elements
            .iter()
            .any(|e| e.name.local == "ScalingSection"
                && e.name.ns.as_deref() == Some("http://schemas.oracle.com/ovm/ovf/1"))
    );
    assert_eq!(
        vs.hardware[0].virtual_system_type(),
        Some("DMTF:Oracle:X86:OracleVM_Xen:HVM_Linux")
    );
    assert_eq!(c.startup.as_ref().map(|s| s.items.len()), Some(1));
    assert_eq!(vs.products[0].properties().count(), 8);
}

#[test]
fn ovirt_trailing_slash_and_unqualified_elements() {
    let Some(bytes) = read("libguestfs__virt-v2v__test-o-vdsm-options.ovf.expected") else {
        return;
    };
    let p = parse(&bytes, &Limits::default()).expect("parse");
    assert_eq!(p.envelope.version, ovm_ovf::OvfVersion::V1);
    let systems = p.envelope.content.systems();
    assert_eq!(systems[0].name.as_deref(), Some("windows"));
    assert!(p.warnings.iter().any(|w| w.contains("TemplateId")));
}
