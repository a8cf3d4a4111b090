//! parse → write → parse gives an equal model, for OVF 1.x and 2.0 output; and arbitrary
//! bytes never make the parser panic.

use ovm_ovf::model::*;
use ovm_ovf::xml::{NS_RASD, NS_SASD, NS_VMW, XmlAttr, XmlElement};
use ovm_ovf::{Limits, OvfVersion};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

/// Text without edge whitespace (the parser trims element text) and without control
/// characters.
fn text() -> impl Strategy<Value = String> {
    "[A-Za-z0-9<>&\"' ._:/${}-]{0,12}".prop_map(|s| s.trim().to_owned())
}

fn ident() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_-]{0,8}"
}

fn vmw_config() -> impl Strategy<Value = XmlElement> {
    (ident(), text()).prop_map(|(k, v)| {
        XmlElement::new(Some(NS_VMW), "Config")
            .attr(Some(ovm_ovf::xml::NS_OVF1), "required", "false")
            .attr(Some(NS_VMW), "key", k)
            .attr(Some(NS_VMW), "value", v)
    })
}

fn extensions() -> impl Strategy<Value = Extensions> {
    (
        vec(
            text().prop_map(|v| XmlAttr::new(Some(NS_VMW), "osType", v)),
            0..2,
        ),
        vec(vmw_config(), 0..2),
    )
        .prop_map(|(attrs, elements)| Extensions { attrs, elements })
}

fn cim_property() -> impl Strategy<Value = CimProperty> {
    (
        prop_oneof![
            Just("ElementName"),
            Just("Description"),
            Just("InstanceID"),
            Just("HostResource"),
            Just("Connection"),
            Just("AllocationUnits"),
            Just("VirtualQuantity"),
        ],
        text(),
    )
        .prop_map(|(name, value)| CimProperty {
            ns: NS_RASD.to_owned(),
            name: name.to_owned(),
            value,
            attrs: Vec::new(),
        })
}

fn item(v2: bool) -> impl Strategy<Value = Item> {
    let kinds = if v2 {
        prop_oneof![
            Just(ItemKind::Item),
            Just(ItemKind::StorageItem),
            Just(ItemKind::EthernetPortItem)
        ]
        .boxed()
    } else {
        Just(ItemKind::Item).boxed()
    };
    (
        kinds,
        any::<bool>(),
        option::of(ident()),
        option::of(prop_oneof![Just("min".to_owned()), Just("max".to_owned())]),
        0u32..40,
        vec(cim_property(), 0..4),
        vec(vmw_config(), 0..2),
    )
        .prop_map(
            |(kind, required, configuration, bound, rt, mut properties, elements)| {
                let ns = if kind == ItemKind::StorageItem {
                    NS_SASD
                } else {
                    NS_RASD
                };
                properties.insert(
                    0,
                    CimProperty {
                        ns: ns.to_owned(),
                        name: "ResourceType".into(),
                        value: rt.to_string(),
                        attrs: Vec::new(),
                    },
                );
                Item {
                    kind,
                    required,
                    configuration,
                    bound,
                    properties,
                    extra: Extensions {
                        attrs: Vec::new(),
                        elements,
                    },
                }
            },
        )
}

fn hardware(v2: bool) -> impl Strategy<Value = VirtualHardwareSection> {
    (
        any::<bool>(),
        text(),
        option::of(ident()),
        option::of(Just("iso".to_owned())),
        option::of(text()),
        vec(item(v2), 0..5),
        extensions(),
    )
        .prop_map(|(required, info, id, transport, vst, items, extra)| {
            VirtualHardwareSection {
                required,
                info,
                id,
                transport,
                system: vst.map(|v| SystemSettings {
                    properties: vec![CimProperty {
                        ns: ovm_ovf::xml::NS_VSSD.to_owned(),
                        name: "VirtualSystemType".into(),
                        value: v,
                        attrs: Vec::new(),
                    }],
                    extra: Extensions::default(),
                }),
                items,
                extra,
            }
        })
}

fn product() -> impl Strategy<Value = ProductSection> {
    let property = (
        ident(),
        prop_oneof![Just("string".to_owned()), Just("int".to_owned())],
        option::of(text()),
        option::of(any::<bool>()),
        option::of(text()),
        option::of(any::<bool>()),
        option::of(text()),
        option::of(text()),
        vec((text(), option::of(ident())), 0..2),
    )
        .prop_map(
            |(key, type_, qualifiers, uc, default, password, label, description, values)| {
                ProductEntry::Property(Property {
                    key,
                    type_,
                    qualifiers,
                    user_configurable: uc,
                    default,
                    password,
                    label,
                    description,
                    values: values
                        .into_iter()
                        .map(|(value, configuration)| PropertyValue {
                            value,
                            configuration,
                        })
                        .collect(),
                    extra: Extensions::default(),
                })
            },
        );
    let entry = prop_oneof![text().prop_map(ProductEntry::Category), property];
    (
        any::<bool>(),
        text(),
        option::of(ident()),
        option::of(text()),
        option::of(text()),
        option::of(text()),
        vec(entry, 0..4),
    )
        .prop_map(
            |(required, info, class, product, vendor, version, entries)| ProductSection {
                required,
                info,
                class,
                instance: None,
                product,
                vendor,
                version,
                full_version: None,
                product_url: None,
                vendor_url: None,
                app_url: None,
                entries,
                extra: Extensions::default(),
            },
        )
}

fn system(v2: bool) -> impl Strategy<Value = VirtualSystem> {
    (
        ident(),
        text(),
        option::of(text()),
        option::of((
            any::<bool>(),
            option::of("[0-9]{1,3}"),
            option::of(text()),
            extensions(),
        )),
        vec(hardware(v2), 0..2),
        vec(product(), 0..2),
        option::of((text(), text())),
        option::of((text(), text())),
        option::of(0u32..1000),
        extensions(),
    )
        .prop_map(
            |(id, info, name, os, hardware, products, eula, annotation, install, extra)| {
                VirtualSystem {
                    id,
                    info,
                    name,
                    operating_system: os.map(|(required, id, description, extra)| {
                        OperatingSystemSection {
                            required,
                            info: "os".into(),
                            id,
                            version: None,
                            description,
                            extra,
                        }
                    }),
                    hardware,
                    products,
                    eulas: eula
                        .into_iter()
                        .map(|(info, license)| EulaSection {
                            required: false,
                            info,
                            license,
                            extra: Extensions::default(),
                        })
                        .collect(),
                    annotation: annotation.map(|(info, annotation)| AnnotationSection {
                        required: false,
                        info,
                        annotation,
                        extra: Extensions::default(),
                    }),
                    install: install.map(|d| InstallSection {
                        required: true,
                        info: String::new(),
                        initial_boot_stop_delay: Some(d),
                        extra: Extensions::default(),
                    }),
                    extra,
                }
            },
        )
}

fn content(v2: bool) -> impl Strategy<Value = Content> {
    let leaf = system(v2).prop_map(|s| Content::System(Box::new(s)));
    leaf.prop_recursive(2, 6, 3, move |inner| {
        (
            ident(),
            text(),
            option::of(text()),
            vec(inner, 1..3),
            vec(
                (ident(), option::of(0u32..10), option::of(any::<bool>())),
                0..3,
            ),
        )
            .prop_map(|(id, info, name, members, startup)| {
                Content::Collection(Box::new(VirtualSystemCollection {
                    id,
                    info,
                    name,
                    startup: Some(StartupSection {
                        required: true,
                        info: "Startup order".into(),
                        items: startup
                            .into_iter()
                            .map(|(id, order, wait)| StartupItem {
                                id,
                                order,
                                start_delay: Some(0),
                                waiting_for_guest: wait,
                                stop_delay: None,
                                start_action: Some("powerOn".into()),
                                stop_action: None,
                                extra_attrs: Vec::new(),
                            })
                            .collect(),
                        extra: Extensions::default(),
                    }),
                    products: Vec::new(),
                    eulas: Vec::new(),
                    annotation: None,
                    resource_allocation: None,
                    members,
                    extra: Extensions::default(),
                }))
            })
    })
}

fn envelope() -> impl Strategy<Value = Envelope> {
    any::<bool>().prop_flat_map(|v2| {
        let file = (
            ident(),
            "[a-z0-9_.-]{1,10}",
            option::of(any::<u64>()),
            option::of(Just("gzip".to_owned())),
            option::of(1u64..u64::MAX),
        )
            .prop_map(|(id, href, size, compression, chunk_size)| FileReference {
                id,
                href,
                size,
                compression,
                chunk_size,
                extra_attrs: Vec::new(),
            });
        let disk = (
            ident(),
            option::of(ident()),
            prop_oneof![
                any::<u64>().prop_map(Capacity::Value),
                ident().prop_map(Capacity::Property)
            ],
            option::of(Just("byte * 2^20".to_owned())),
            option::of(any::<u64>()),
            option::of(text()),
        )
            .prop_map(
                |(disk_id, file_ref, capacity, capacity_units, populated_size, format)| {
                    VirtualDisk {
                        disk_id,
                        file_ref,
                        capacity,
                        capacity_units,
                        populated_size,
                        format,
                        parent_ref: None,
                        extra_attrs: vec![XmlAttr::new(Some(ovm_ovf::xml::NS_VBOX), "uuid", "u")],
                    }
                },
            );
        let network = (ident(), option::of(text())).prop_map(|(name, description)| NetworkDef {
            name,
            description,
            extra: Extensions::default(),
        });
        let config = (ident(), any::<bool>(), text(), text()).prop_map(
            |(id, default, label, description)| DeploymentConfiguration {
                id,
                default,
                label,
                description,
                extra: Extensions::default(),
            },
        );
        (
            option::of(Just("en-US".to_owned())),
            vec(file, 0..3),
            option::of((text(), vec(disk, 0..3))),
            option::of((text(), vec(network, 0..3))),
            option::of(vec(config, 0..3)),
            content(v2),
            vec(
                text().prop_map(|v| XmlAttr::new(Some(NS_VMW), "buildId", v)),
                0..2,
            ),
        )
            .prop_map(
                move |(lang, references, disks, networks, configs, content, attrs)| Envelope {
                    version: if v2 { OvfVersion::V2 } else { OvfVersion::V1 },
                    lang,
                    references,
                    disk_section: disks.map(|(info, disks)| DiskSection {
                        required: true,
                        info,
                        disks,
                        extra: Extensions::default(),
                    }),
                    network_section: networks.map(|(info, networks)| NetworkSection {
                        required: true,
                        info,
                        networks,
                        extra: Extensions::default(),
                    }),
                    deployment_options: configs.map(|configurations| DeploymentOptionSection {
                        required: true,
                        info: "Configurations".into(),
                        configurations,
                        extra: Extensions::default(),
                    }),
                    content,
                    extra: Extensions {
                        attrs,
                        elements: Vec::new(),
                    },
                },
            )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn parse_write_parse_is_identity(env in envelope()) {
        let text = ovm_ovf::write::write(&env, env.version);
        let back = ovm_ovf::parse::parse_unvalidated(text.as_bytes(), &Limits::default())
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&back.envelope, &env, "{}", text);
        // And once more: writing the re-read model gives the same text.
        prop_assert_eq!(ovm_ovf::write::write(&back.envelope, env.version), text);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..2048)) {
        let _ = ovm_ovf::parse(&bytes, &Limits::default());
        let _ = ovm_ovf::manifest::Manifest::parse(&bytes);
    }

    #[test]
    fn mutated_descriptors_never_panic(pos in 0usize..4000, byte in any::<u8>(), cut in any::<bool>()) {
        let mut doc = SAMPLE.as_bytes().to_vec();
        let p = pos % doc.len();
        if cut { doc.truncate(p) } else { doc[p] = byte }
        let _ = ovm_ovf::parse(&doc, &Limits::default());
    }
}

const SAMPLE: &str = r#"<?xml version="1.0"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References><File ovf:id="f1" ovf:href="d.vmdk" ovf:size="100"/></References>
  <DiskSection><Info>d</Info><Disk ovf:diskId="d1" ovf:fileRef="f1" ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^30"/></DiskSection>
  <NetworkSection><Info>n</Info><Network ovf:name="VM Network"/></NetworkSection>
  <VirtualSystem ovf:id="vm"><Info>x</Info>
    <VirtualHardwareSection><Info>h</Info>
      <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>512</rasd:VirtualQuantity><rasd:AllocationUnits>MB</rasd:AllocationUnits></Item>
      <Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>17</rasd:ResourceType><rasd:HostResource>ovf:/disk/d1</rasd:HostResource></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>"#;

/// The `HostResource` forms packages write all reach the disk (`ovf://disk/ID` was once
/// dropped); one that names nothing is reported as not honoured, naming the value.
#[test]
fn disk_host_resources_in_every_form_reach_the_disk() {
    for form in ["ovf:/disk/d1", "/disk/d1", "ovf://disk/d1", "OVF:/disk/d1"] {
        let doc = SAMPLE.replace("ovf:/disk/d1", form);
        let parsed = ovm_ovf::parse(doc.as_bytes(), &Limits::default()).expect(form);
        let env = &parsed.envelope;
        let vs = env.content.systems()[0];
        let m = ovm_ovf::mapping::map_system(env, vs, None, &Limits::default()).expect(form);
        assert_eq!(m.disks.len(), 1, "{form}: {:?}", m.not_honoured);
        assert_eq!(m.disks[0].disk_id, "d1", "{form}");
    }
    let doc = SAMPLE.replace("ovf:/disk/d1", "VOL");
    let parsed = ovm_ovf::parse(doc.as_bytes(), &Limits::default()).unwrap();
    let env = &parsed.envelope;
    let vs = env.content.systems()[0];
    let m = ovm_ovf::mapping::map_system(env, vs, None, &Limits::default()).unwrap();
    assert!(m.disks.is_empty());
    assert!(
        m.not_honoured.iter().any(|n| n.reason.contains("\"VOL\"")),
        "{:?}",
        m.not_honoured
    );
}
