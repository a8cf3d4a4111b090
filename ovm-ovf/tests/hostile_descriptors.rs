//! Hostile descriptors: each refusal the issue lists, one test each.

use ovm_ovf::{HrefPolicy, Limits, OvfError, parse};

fn envelope(references: &str, disk_attrs: &str, body: &str) -> String {
    format!(
        r#"<?xml version="1.0"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References>{references}</References>
  <DiskSection><Info>d</Info><Disk ovf:diskId="d1" {disk_attrs}/></DiskSection>
  <VirtualSystem ovf:id="vm"><Info>x</Info>{body}</VirtualSystem>
</Envelope>"#
    )
}

fn ok_disk() -> &'static str {
    r#"ovf:fileRef="f1" ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^30""#
}

fn file(href: &str, size: &str) -> String {
    format!(r#"<File ovf:id="f1" ovf:href="{href}" ovf:size="{size}"/>"#)
}

#[test]
fn baseline_parses() {
    let doc = envelope(&file("disk.vmdk", "10"), ok_disk(), "");
    parse(doc.as_bytes(), &Limits::default()).unwrap();
}

#[test]
fn billion_laughs_refused() {
    let doc = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"><VirtualSystem><Info>&lol3;</Info></VirtualSystem></Envelope>"#;
    assert!(matches!(
        parse(doc.as_bytes(), &Limits::default()),
        Err(OvfError::DoctypeRefused)
    ));
}

#[test]
fn external_entity_refused() {
    let doc = r#"<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/shadow">]><Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"><VirtualSystem><Info>&x;</Info></VirtualSystem></Envelope>"#;
    assert!(matches!(
        parse(doc.as_bytes(), &Limits::default()),
        Err(OvfError::DoctypeRefused)
    ));
    // Without a DTD, an undeclared entity is refused by name.
    let doc = envelope(&file("disk.vmdk", "10"), ok_disk(), "<Name>&x;</Name>");
    assert!(
        matches!(parse(doc.as_bytes(), &Limits::default()), Err(OvfError::EntityRefused { entity }) if entity == "x")
    );
}

#[test]
fn oversized_descriptor_refused_and_limit_configurable() {
    let pad = format!("<!-- {} -->", "x".repeat(13 << 20));
    let doc = envelope(&file("disk.vmdk", "10"), ok_disk(), &pad);
    assert!(matches!(
        parse(doc.as_bytes(), &Limits::default()),
        Err(OvfError::TooLarge { .. })
    ));
    let big = Limits {
        max_descriptor_bytes: 32 << 20,
        ..Limits::default()
    };
    parse(doc.as_bytes(), &big).unwrap();
}

#[test]
fn bad_hrefs_refused_unless_allowed() {
    for href in [
        "/etc/passwd",
        "../disk.vmdk",
        "http://example.invalid/disk.vmdk",
        "file:///etc/passwd",
        "sub/%2e%2e/%2e%2e/x",
    ] {
        let doc = envelope(&file(href, "10"), ok_disk(), "");
        assert!(
            matches!(
                parse(doc.as_bytes(), &Limits::default()),
                Err(OvfError::BadHref { .. })
            ),
            "{href}"
        );
    }
    let lax = Limits {
        href: HrefPolicy {
            allow_urls: true,
            allow_absolute: true,
            allow_parent: true,
        },
        ..Limits::default()
    };
    let doc = envelope(&file("../disk.vmdk", "10"), ok_disk(), "");
    parse(doc.as_bytes(), &lax).unwrap();
}

#[test]
fn negative_overflowing_and_oversized_sizes_refused() {
    for size in [
        "-1",
        "-9223372036854775809",
        "18446744073709551616",
        "12abc",
        "9223372036854775808",
    ] {
        let doc = envelope(&file("disk.vmdk", size), ok_disk(), "");
        assert!(
            matches!(
                parse(doc.as_bytes(), &Limits::default()),
                Err(OvfError::InvalidSize { .. })
            ),
            "{size}"
        );
    }
    for cap in [
        r#"ovf:capacity="-5""#,
        r#"ovf:capacity="18446744073709551615" ovf:capacityAllocationUnits="byte * 2^20""#,
        r#"ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^60""#,
    ] {
        let doc = envelope(
            &file("disk.vmdk", "10"),
            &format!(r#"ovf:fileRef="f1" {cap}"#),
            "",
        );
        assert!(
            matches!(
                parse(doc.as_bytes(), &Limits::default()),
                Err(OvfError::InvalidSize { .. })
            ),
            "{cap}"
        );
    }
    let doc = envelope(
        r#"<File ovf:id="f1" ovf:href="d" ovf:chunkSize="-1"/>"#,
        ok_disk(),
        "",
    );
    assert!(matches!(
        parse(doc.as_bytes(), &Limits::default()),
        Err(OvfError::InvalidSize { .. })
    ));
}

#[test]
fn unknown_required_sections_and_items_fail_with_their_name() {
    let body = r#"<FancySection xmlns="urn:vendor"><Info>x</Info></FancySection>"#;
    let doc = envelope(&file("disk.vmdk", "10"), ok_disk(), body);
    match parse(doc.as_bytes(), &Limits::default()) {
        Err(OvfError::UnknownRequired { element, context }) => {
            assert!(element.contains("FancySection"));
            assert_eq!(context, "VirtualSystem vm");
        }
        other => panic!("{other:?}"),
    }
    let body = r#"<v:Thing xmlns:v="urn:vendor" ovf:required="true"/>"#;
    let doc = envelope(&file("disk.vmdk", "10"), ok_disk(), body);
    assert!(matches!(
        parse(doc.as_bytes(), &Limits::default()),
        Err(OvfError::UnknownRequired { .. })
    ));
    // Optional: kept and reported.
    let body = r#"<v:FancySection xmlns:v="urn:vendor" ovf:required="false"><Info>x</Info></v:FancySection>"#;
    let doc = envelope(&file("disk.vmdk", "10"), ok_disk(), body);
    let p = parse(doc.as_bytes(), &Limits::default()).unwrap();
    assert!(p.warnings.iter().any(|w| w.contains("FancySection")));
}

#[test]
fn dangling_references_refused() {
    let doc = envelope(
        &file("disk.vmdk", "10"),
        r#"ovf:fileRef="nope" ovf:capacity="1""#,
        "",
    );
    assert!(matches!(
        parse(doc.as_bytes(), &Limits::default()),
        Err(OvfError::DanglingReference { .. })
    ));
    let body = r#"<VirtualHardwareSection><Info>h</Info><Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>17</rasd:ResourceType><rasd:HostResource>ovf:/disk/missing</rasd:HostResource></Item></VirtualHardwareSection>"#;
    let doc = envelope(&file("disk.vmdk", "10"), ok_disk(), body);
    assert!(matches!(
        parse(doc.as_bytes(), &Limits::default()),
        Err(OvfError::DanglingReference { .. })
    ));
}

#[test]
fn attributes_with_and_without_prefix_and_any_prefix_name() {
    let doc = r#"<x:Envelope xmlns:x="http://schemas.dmtf.org/ovf/envelope/1" xmlns:r="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <x:References><x:File id="f1" href="d.vmdk" size="5"/></x:References>
  <x:VirtualSystem id="vm"><x:Info>i</x:Info>
    <x:VirtualHardwareSection><x:Info>h</x:Info>
      <x:Item><r:InstanceID>1</r:InstanceID><r:ResourceType>4</r:ResourceType><r:VirtualQuantity>2</r:VirtualQuantity><r:AllocationUnits>byte*2^30</r:AllocationUnits></x:Item>
    </x:VirtualHardwareSection>
  </x:VirtualSystem>
</x:Envelope>"#;
    let p = parse(doc.as_bytes(), &Limits::default()).unwrap();
    assert_eq!(p.envelope.references[0].size, Some(5));
    let env = &p.envelope;
    let m = ovm_ovf::mapping::map_system(env, env.content.systems()[0], None, &Limits::default())
        .unwrap();
    assert_eq!(m.spec.memory_mib, 2048);
}
