//! Mapping a VirtualSystem onto `ovm_core::model::VmSpec`, listing every item ovm does
//! not honour; and the reverse, a descriptor for exporting a VM spec.

use ovm_core::model::{DomainType, VmSpec};

use crate::error::{OvfError, Result};
use crate::limits::Limits;
use crate::model::*;
use crate::ns::{NS_RASD, NS_VSSD};
use crate::parse::{disk_capacity_bytes, host_resource};
use crate::units::{bytes_per_unit, parse_size};

/// Something in the descriptor ovm does not do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotHonoured {
    /// What: `item 7 "CD/DVD drive 1" (ResourceType 15)`, a section name, ...
    pub item: String,
    /// Why, and what ovm does instead.
    pub reason: String,
    /// Whether the descriptor marks it required. Required items whose kind ovm does
    /// not know make the import fail.
    pub required: bool,
    /// True when ovm does not know this kind of item at all.
    pub unknown: bool,
}

/// A disk of a mapped system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedDisk {
    /// `ovf:diskId`.
    pub disk_id: String,
    /// The backing file id, if any (none: a blank disk).
    pub file_id: Option<String>,
    /// The backing file's href.
    pub href: Option<String>,
    /// Guest-visible size.
    pub capacity_bytes: u64,
    /// `ovf:format` URI.
    pub format: Option<String>,
}

/// A NIC of a mapped system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedNic {
    /// The logical network name (`rasd:Connection`).
    pub network: String,
    /// MAC address, when the descriptor gives one.
    pub mac: Option<String>,
    /// Adapter model (`rasd:ResourceSubType`), informative.
    pub model: Option<String>,
}

/// A VirtualSystem mapped onto ovm's model.
#[derive(Debug, Clone, PartialEq)]
pub struct MappedSystem {
    /// `ovf:id`.
    pub id: String,
    /// The spec (disks and NICs are filled in by the importer, which owns volumes and
    /// networks).
    pub spec: VmSpec,
    /// Disks in hardware order.
    pub disks: Vec<MappedDisk>,
    /// NICs in hardware order.
    pub nics: Vec<MappedNic>,
    /// Free text (annotation, product).
    pub description: String,
    /// What is not honoured.
    pub not_honoured: Vec<NotHonoured>,
}

impl MappedSystem {
    /// Fails on the first required item of unknown kind.
    pub fn check_required(&self) -> Result<()> {
        match self.not_honoured.iter().find(|n| n.required && n.unknown) {
            Some(n) => Err(OvfError::Unhonoured {
                item: format!("VirtualSystem {} {}", self.id, n.item),
                reason: n.reason.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// The domain type implied by `vssd:VirtualSystemType`: Oracle VM's types name it
/// (`...OracleVM_Xen:PVM_Linux` → PV, `...PVHVM_*` → PV-HVM, other Xen types → HVM);
/// everything else (VMware `vmx-NN`, VirtualBox, KVM) was installed on emulated
/// hardware → HVM.
pub fn domain_type_for(system_type: Option<&str>) -> DomainType {
    let Some(t) = system_type else {
        return DomainType::Hvm;
    };
    let t = t.to_ascii_lowercase();
    if t.contains("pvhvm") {
        DomainType::PvHvm
    } else if t.contains("oraclevm_xen:pvm") || t.contains("xen:pv_") || t == "xen-pv" {
        DomainType::Pv
    } else if t.contains("pvh") {
        DomainType::Pvh
    } else {
        DomainType::Hvm
    }
}

fn item_name(item: &Item) -> String {
    let rt = item.get("ResourceType").unwrap_or("?");
    format!(
        "item {} {:?} (ResourceType {rt})",
        item.instance_id().unwrap_or("?"),
        item.label()
    )
}

fn sanitise_name(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_control() || c == '/' || c == '\\' {
                '_'
            } else {
                c
            }
        })
        .collect();
    let s = s.trim();
    let s = if s.is_empty() || s == "." || s == ".." {
        "vm"
    } else {
        s
    };
    let mut out = String::new();
    for c in s.chars() {
        if out.len() + c.len_utf8() > ovm_core::model::MAX_NAME_LEN {
            break;
        }
        out.push(c);
    }
    out
}

fn looks_like_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Maps a VirtualSystem, for deployment configuration `config` (default: the
/// descriptor's default configuration).
pub fn map_system(
    env: &Envelope,
    vs: &VirtualSystem,
    config: Option<&str>,
    limits: &Limits,
) -> Result<MappedSystem> {
    let config = config.or_else(|| env.default_configuration());
    let mut not_honoured = Vec::new();
    let name = sanitise_name(
        vs.name
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(&vs.id),
    );
    let hw = vs.hardware.first();
    for extra in vs.hardware.iter().skip(1) {
        not_honoured.push(NotHonoured {
            item: format!(
                "VirtualHardwareSection {:?}",
                extra.virtual_system_type().unwrap_or("?")
            ),
            reason: "only the first hardware section is used".into(),
            required: false,
            unknown: false,
        });
    }
    let mut spec = VmSpec::new(name, 1, 512);
    spec.domain_type = domain_type_for(hw.and_then(|h| h.virtual_system_type()));
    spec.boot = ovm_core::model::BootSource::Disk;
    let mut disks = Vec::new();
    let mut nics = Vec::new();
    let (mut saw_cpu, mut saw_mem) = (false, false);
    for item in hw.map(|h| h.items.as_slice()).unwrap_or_default() {
        if !item.applies_to(config) {
            continue;
        }
        if let Some(bound) = &item.bound
            && bound != "normal"
        {
            not_honoured.push(NotHonoured {
                item: item_name(item),
                reason: format!("ovf:bound={bound} ranges are not used; the normal value is"),
                required: false,
                unknown: false,
            });
            continue;
        }
        let what = item_name(item);
        let mut skip = |reason: &str| {
            not_honoured.push(NotHonoured {
                item: what.clone(),
                reason: reason.to_owned(),
                required: item.required,
                unknown: false,
            })
        };
        match item.resource_kind() {
            Some(ResourceKind::Processor) => {
                let q = item.get("VirtualQuantity").unwrap_or("1");
                spec.vcpus = q.trim().parse().map_err(|_| {
                    OvfError::value(
                        format!("VirtualSystem {} {what} VirtualQuantity", vs.id),
                        q,
                        "expected a vCPU count",
                    )
                })?;
                saw_cpu = true;
            }
            Some(ResourceKind::Memory) => {
                let q = item
                    .get("VirtualQuantity")
                    .ok_or_else(|| OvfError::Missing {
                        what: "rasd:VirtualQuantity".into(),
                        context: format!("VirtualSystem {} {what}", vs.id),
                    })?;
                let n = parse_size(
                    &format!("VirtualSystem {} memory VirtualQuantity", vs.id),
                    q,
                )?;
                // Missing units: MiB, as every writer means.
                let units = match item.get("AllocationUnits") {
                    Some(u) => bytes_per_unit(u)?,
                    None => 1 << 20,
                };
                let bytes = n.checked_mul(units).ok_or_else(|| {
                    OvfError::size(
                        format!("VirtualSystem {} memory", vs.id),
                        q,
                        "overflows u64 bytes",
                    )
                })?;
                spec.memory_mib = bytes.div_ceil(1 << 20);
                spec.max_memory_mib = spec.memory_mib;
                saw_mem = true;
            }
            Some(ResourceKind::Disk) => {
                let hr = item.get("HostResource").unwrap_or_default();
                match host_resource(hr) {
                    Some(("disk", id)) => {
                        let d = env.disk(id).ok_or_else(|| OvfError::DanglingReference {
                            what: format!("VirtualSystem {} {what}", vs.id),
                            target: "Disk".into(),
                            id: id.to_owned(),
                        })?;
                        let file = d.file_ref.as_deref().and_then(|f| env.file(f));
                        disks.push(MappedDisk {
                            disk_id: d.disk_id.clone(),
                            file_id: d.file_ref.clone(),
                            href: file.map(|f| f.href.clone()),
                            capacity_bytes: disk_capacity_bytes(env, d, limits)?,
                            format: d.format.clone(),
                        });
                    }
                    _ => skip(&format!(
                        "disk without a DiskSection reference (HostResource {hr:?})"
                    )),
                }
            }
            Some(ResourceKind::Ethernet) => {
                let network = item.get("Connection").unwrap_or_default().to_owned();
                let mac = item
                    .get("Address")
                    .or_else(|| item.get("MACAddress"))
                    .filter(|m| looks_like_mac(m))
                    .map(|m| m.replace('-', ":").to_ascii_lowercase());
                nics.push(MappedNic {
                    network,
                    mac,
                    model: item.get("ResourceSubType").map(str::to_owned),
                });
            }
            Some(
                ResourceKind::IdeController
                | ResourceKind::ScsiController
                | ResourceKind::OtherStorage
                | ResourceKind::FcController,
            ) => skip("controller model not kept: disks attach to the backend's default bus"),
            Some(ResourceKind::CdDrive | ResourceKind::DvdDrive) => {
                skip("CD/DVD drives are not part of a VM spec; attach an ISO after import")
            }
            Some(ResourceKind::Floppy) => skip("floppy drives are not supported"),
            Some(ResourceKind::UsbController) => skip("USB controllers are not emulated"),
            Some(ResourceKind::SoundCard) => skip("sound cards are not emulated"),
            Some(ResourceKind::Graphics) => skip("the backend provides its own console"),
            Some(ResourceKind::SerialPort | ResourceKind::ParallelPort) => {
                skip("ports are not configurable; the backend provides a serial console")
            }
            Some(ResourceKind::Other) | Some(ResourceKind::Unknown(_)) | None => {
                not_honoured.push(NotHonoured {
                    item: what.clone(),
                    reason: "resource type ovm does not know".into(),
                    required: item.required,
                    unknown: true,
                });
            }
        }
    }
    if !saw_cpu {
        not_honoured.push(NotHonoured {
            item: "processor".into(),
            reason: "no CPU item: 1 vCPU".into(),
            required: false,
            unknown: false,
        });
    }
    if !saw_mem {
        not_honoured.push(NotHonoured {
            item: "memory".into(),
            reason: "no memory item: 512 MiB".into(),
            required: false,
            unknown: false,
        });
    }
    let mut description = String::new();
    if let Some(a) = &vs.annotation {
        description.push_str(&a.annotation);
    }
    if vs.products.iter().any(|p| p.properties().next().is_some()) {
        not_honoured.push(NotHonoured {
            item: "ProductSection properties".into(),
            reason: "recorded in the template; not delivered to the guest (no OVF environment transport)".into(),
            required: false,
            unknown: false,
        });
    }
    if !vs.eulas.is_empty() {
        not_honoured.push(NotHonoured {
            item: "EulaSection".into(),
            reason: "the licence is not shown for acceptance; read it with `ovm ovf inspect`"
                .into(),
            required: false,
            unknown: false,
        });
    }
    for e in &vs.extra.elements {
        not_honoured.push(NotHonoured {
            item: e.name.to_string(),
            reason: "extension kept in the descriptor, not acted on".into(),
            required: false,
            unknown: false,
        });
    }
    Ok(MappedSystem {
        id: vs.id.clone(),
        spec,
        disks,
        nics,
        description,
        not_honoured,
    })
}

fn rasd(name: &str, value: impl Into<String>) -> CimProperty {
    CimProperty {
        ns: NS_RASD.into(),
        name: name.into(),
        value: value.into(),
        attrs: Vec::new(),
    }
}

fn item(props: Vec<CimProperty>) -> Item {
    Item {
        kind: ItemKind::Item,
        required: true,
        configuration: None,
        bound: None,
        properties: props,
        extra: Extensions::default(),
    }
}

/// A descriptor for one VM: CPU, memory, a SCSI controller with the disks
/// (`disk_ids[i]` with `capacities[i]` bytes), and NICs on the named networks. Used by
/// export; files and formats are filled in by [`crate::export::write_ova`].
pub fn envelope_for_spec(
    spec: &VmSpec,
    disks: &[(String, u64)],
    networks: &[String],
    description: &str,
) -> Envelope {
    let system_type = match spec.domain_type {
        DomainType::Pv => "DMTF:Oracle:X86:OracleVM_Xen:PVM_Linux",
        DomainType::PvHvm => "DMTF:Oracle:X86:OracleVM_Xen:PVHVM_Linux",
        DomainType::Hvm | DomainType::Pvh => "DMTF:KVM",
    };
    let mut items = vec![
        item(vec![
            rasd("ElementName", format!("{} virtual CPU(s)", spec.vcpus)),
            rasd("InstanceID", "1"),
            rasd("ResourceType", "3"),
            rasd("VirtualQuantity", spec.vcpus.to_string()),
        ]),
        item(vec![
            rasd("AllocationUnits", "byte * 2^20"),
            rasd("ElementName", format!("{} MB of memory", spec.memory_mib)),
            rasd("InstanceID", "2"),
            rasd("ResourceType", "4"),
            rasd("VirtualQuantity", spec.memory_mib.to_string()),
        ]),
        item(vec![
            rasd("Address", "0"),
            rasd("ElementName", "SCSI controller 0"),
            rasd("InstanceID", "3"),
            rasd("ResourceSubType", "lsilogic"),
            rasd("ResourceType", "6"),
        ]),
    ];
    let mut next = 4;
    for (i, (id, _)) in disks.iter().enumerate() {
        items.push(item(vec![
            rasd("AddressOnParent", i.to_string()),
            rasd("ElementName", format!("Hard disk {}", i + 1)),
            rasd("HostResource", format!("ovf:/disk/{id}")),
            rasd("InstanceID", next.to_string()),
            rasd("Parent", "3"),
            rasd("ResourceType", "17"),
        ]));
        next += 1;
    }
    for (i, n) in networks.iter().enumerate() {
        let mut props = vec![
            rasd("AutomaticAllocation", "true"),
            rasd("Connection", n.clone()),
            rasd("ElementName", format!("Network adapter {}", i + 1)),
            rasd("InstanceID", next.to_string()),
            rasd("ResourceSubType", "virtio"),
            rasd("ResourceType", "10"),
        ];
        if let Some(mac) = spec.nics.get(i).and_then(|n| n.mac.clone()) {
            props.insert(0, rasd("Address", mac));
        }
        items.push(item(props));
        next += 1;
    }
    let mut unique_networks: Vec<String> = Vec::new();
    for n in networks {
        if !unique_networks.contains(n) {
            unique_networks.push(n.clone());
        }
    }
    Envelope {
        version: OvfVersion::V1,
        lang: None,
        references: Vec::new(),
        disk_section: Some(DiskSection {
            required: true,
            info: "Virtual disk information".into(),
            disks: disks
                .iter()
                .map(|(id, cap)| VirtualDisk {
                    disk_id: id.clone(),
                    file_ref: None,
                    capacity: Capacity::Value(*cap),
                    capacity_units: None,
                    populated_size: None,
                    format: None,
                    parent_ref: None,
                    extra_attrs: Vec::new(),
                })
                .collect(),
            extra: Extensions::default(),
        }),
        network_section: (!unique_networks.is_empty()).then(|| NetworkSection {
            required: true,
            info: "The list of logical networks".into(),
            networks: unique_networks
                .into_iter()
                .map(|name| NetworkDef {
                    description: Some(format!("The {name} network")),
                    name,
                    extra: Extensions::default(),
                })
                .collect(),
            extra: Extensions::default(),
        }),
        deployment_options: None,
        content: Content::System(Box::new(VirtualSystem {
            id: spec.name.clone(),
            info: "A virtual machine exported by ovm".into(),
            name: Some(spec.name.clone()),
            operating_system: Some(OperatingSystemSection {
                required: false,
                info: "The kind of installed guest operating system".into(),
                id: Some("1".into()),
                version: None,
                description: None,
                extra: Extensions::default(),
            }),
            hardware: vec![VirtualHardwareSection {
                required: true,
                info: "Virtual hardware requirements".into(),
                id: None,
                transport: None,
                system: Some(SystemSettings {
                    properties: vec![
                        CimProperty {
                            ns: NS_VSSD.into(),
                            name: "ElementName".into(),
                            value: "Virtual Hardware Family".into(),
                            attrs: Vec::new(),
                        },
                        CimProperty {
                            ns: NS_VSSD.into(),
                            name: "InstanceID".into(),
                            value: "0".into(),
                            attrs: Vec::new(),
                        },
                        CimProperty {
                            ns: NS_VSSD.into(),
                            name: "VirtualSystemType".into(),
                            value: system_type.into(),
                            attrs: Vec::new(),
                        },
                    ],
                    extra: Extensions::default(),
                }),
                items,
                extra: Extensions::default(),
            }],
            products: Vec::new(),
            eulas: Vec::new(),
            annotation: (!description.is_empty()).then(|| AnnotationSection {
                required: false,
                info: "A human-readable annotation".into(),
                annotation: description.into(),
                extra: Extensions::default(),
            }),
            install: None,
            extra: Extensions::default(),
        })),
        extra: Extensions::default(),
    }
}
