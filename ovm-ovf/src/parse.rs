//! Descriptor parsing: the safe XML tree → [`Envelope`], in every dialect found in real
//! files, then validation (references, sizes, hrefs).
//!
//! Dialects: VMware's pre-standard 0.9 (`<Section xsi:type="ovf:DiskSection_Type">`,
//! `<Content xsi:type="ovf:VirtualSystem_Type">`), early DMTF drafts, OVF 1.x (with or
//! without the trailing slash oVirt writes, and oVirt's unqualified elements), OVF 2.x,
//! and 1.x envelopes embedding 2.x sections. Elements are matched by namespace and local
//! name; attributes are accepted with the `ovf:` namespace or unqualified.
//!
//! `ovf:required` policy: an element ovm does not model fails parsing when it is marked
//! `ovf:required="true"`, or when it is a section (`...Section`) without the attribute
//! (the OVF default), unless it is a vendor section ovm recognises as safe to ignore
//! (e.g. `vmw:CpuCompatibilitySection`). Everything else is kept and reported as a
//! warning.

use std::collections::{BTreeSet, HashSet};

use crate::error::{OvfError, Result};
use crate::limits::{HrefPolicy, Limits};
use crate::model::*;
use crate::units::{bytes_per_unit, parse_size};
use crate::xml::{
    self, NS_CIM_PREFIX, NS_OVF_DMTF_DRAFT, NS_OVF_VMW_09, NS_OVF1, NS_OVF2, NS_OVM, NS_VBOX,
    NS_VMW, NS_XML, NS_XSI, QualName, XmlAttr, XmlElement,
};

/// A parsed descriptor and what could not be honoured or was odd about it.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The model.
    pub envelope: Envelope,
    /// Human-readable warnings (unknown optional elements, dangling network names, ...).
    pub warnings: Vec<String>,
}

/// True for every OVF envelope namespace ovm reads (0.9, drafts, 1.x with or without the
/// trailing slash, 2.x).
pub fn is_ovf_namespace(ns: &str) -> bool {
    let ns = ns.strip_suffix('/').unwrap_or(ns);
    matches!(ns, NS_OVF1 | NS_OVF2 | NS_OVF_VMW_09 | NS_OVF_DMTF_DRAFT)
}

fn version_of(ns: &str) -> Option<OvfVersion> {
    match ns.strip_suffix('/').unwrap_or(ns) {
        NS_OVF1 => Some(OvfVersion::V1),
        NS_OVF2 => Some(OvfVersion::V2),
        NS_OVF_VMW_09 | NS_OVF_DMTF_DRAFT => Some(OvfVersion::V0_9),
        _ => None,
    }
}

/// Parses and validates a descriptor.
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Parsed> {
    let mut parsed = parse_unvalidated(bytes, limits)?;
    validate(&parsed.envelope, limits, &mut parsed.warnings)?;
    Ok(parsed)
}

/// Parses a descriptor without checking references, hrefs and size limits (what
/// [`parse`] adds). Syntax, entities, malformed sizes and unknown required elements are
/// still refused.
pub fn parse_unvalidated(bytes: &[u8], limits: &Limits) -> Result<Parsed> {
    if bytes.len() as u64 > limits.max_descriptor_bytes {
        return Err(OvfError::TooLarge {
            what: "descriptor".into(),
            size: bytes.len() as u64,
            limit: limits.max_descriptor_bytes,
        });
    }
    let root = xml::parse_document(bytes, limits.xml)?;
    let mut cx = Cx::default();
    let envelope = cx.envelope(&root)?;
    Ok(Parsed {
        envelope,
        warnings: cx.warnings,
    })
}

#[derive(Default)]
struct Cx {
    warnings: Vec<String>,
    seen: HashSet<String>,
}

/// The OVF name of an element: its local name if it is in an OVF namespace (or none,
/// as oVirt writes), with 0.9's `Section`/`Content` + `xsi:type` resolved.
fn kind(el: &XmlElement) -> Option<&str> {
    let ovf = match el.name.ns.as_deref() {
        None => true,
        Some(ns) => is_ovf_namespace(ns),
    };
    if !ovf {
        return None;
    }
    if matches!(el.name.local.as_str(), "Section" | "Content")
        && let Some(t) = &el.xsi_type
        && t.ns.as_deref().is_none_or(is_ovf_namespace)
    {
        return Some(t.local.strip_suffix("_Type").unwrap_or(&t.local));
    }
    Some(&el.name.local)
}

fn display_name(el: &XmlElement) -> String {
    match kind(el) {
        Some(k) if k != el.name.local => QualName::new(el.name.ns.as_deref(), k).to_string(),
        _ => el.name.to_string(),
    }
}

fn is_ovf_attr(a: &XmlAttr) -> bool {
    a.name.ns.as_deref().is_none_or(is_ovf_namespace)
}

/// An attribute in the OVF namespace or unqualified.
fn attr<'a>(el: &'a XmlElement, local: &str) -> Option<&'a str> {
    el.attrs
        .iter()
        .filter(|a| a.name.local == local && is_ovf_attr(a))
        .min_by_key(|a| a.name.ns.is_none())
        .map(|a| a.value.as_str())
}

fn required_attr<'a>(el: &'a XmlElement, local: &str, ctx: &str) -> Result<&'a str> {
    attr(el, local).ok_or_else(|| OvfError::Missing {
        what: format!("ovf:{local}"),
        context: ctx.to_owned(),
    })
}

/// Attributes other than the modelled ones (and namespace-only plumbing).
fn extra_attrs(el: &XmlElement, known: &[&str]) -> Vec<XmlAttr> {
    el.attrs
        .iter()
        .filter(|a| {
            let modelled = is_ovf_attr(a) && known.contains(&a.name.local.as_str());
            let xsi_type = a.name.ns.as_deref() == Some(NS_XSI) && a.name.local == "type";
            !modelled && !xsi_type
        })
        .cloned()
        .collect()
}

fn parse_bool(what: &str, v: &str) -> Result<bool> {
    match v.trim() {
        "true" | "1" | "True" | "TRUE" => Ok(true),
        "false" | "0" | "False" | "FALSE" => Ok(false),
        _ => Err(OvfError::value(what, v, "expected true or false")),
    }
}

fn opt_bool(el: &XmlElement, local: &str, ctx: &str) -> Result<Option<bool>> {
    attr(el, local)
        .map(|v| parse_bool(&format!("{ctx} ovf:{local}"), v))
        .transpose()
}

fn opt_u32(el: &XmlElement, local: &str, ctx: &str) -> Result<Option<u32>> {
    attr(el, local)
        .map(|v| {
            v.trim().parse::<u32>().map_err(|_| {
                OvfError::value(
                    format!("{ctx} ovf:{local}"),
                    v,
                    "expected a non-negative integer",
                )
            })
        })
        .transpose()
}

fn is_required(el: &XmlElement, ctx: &str) -> Result<bool> {
    Ok(opt_bool(el, "required", ctx)?.unwrap_or(true))
}

fn text(el: &XmlElement) -> String {
    el.text().trim().to_owned()
}

/// Vendor and OVF 2 sections ovm recognises and may safely ignore.
fn recognised_extension(el: &XmlElement) -> bool {
    let local = el.name.local.as_str();
    match el.name.ns.as_deref() {
        Some(NS_VMW) => matches!(
            local,
            "CpuCompatibilitySection"
                | "IpAssignmentSection"
                | "BootOrderSection"
                | "StorageGroupSection"
                | "StorageSection"
                | "Config"
                | "ExtraConfig"
                | "CoresPerSocket"
        ),
        Some(NS_VBOX) => matches!(local, "Machine" | "OSType"),
        Some(NS_OVM) => matches!(local, "ScalingSection"),
        _ => matches!(
            kind(el),
            Some(
                "ScaleOutSection"
                    | "PlacementGroupSection"
                    | "PlacementSection"
                    | "EnvironmentFilesSection"
                    | "BootDeviceSection"
                    | "SharedDiskSection"
                    | "NetworkPortProfile"
                    | "NetworkPortProfileURI"
                    | "Icon"
                    | "Strings"
            )
        ),
    }
}

const CIM_PROPERTIES: &[&str] = &[
    // CIM_ResourceAllocationSettingData
    "address",
    "addressonparent",
    "allocationunits",
    "automaticallocation",
    "automaticdeallocation",
    "caption",
    "changeabletype",
    "configurationname",
    "connection",
    "consumervisibility",
    "description",
    "elementname",
    "generation",
    "hostresource",
    "instanceid",
    "limit",
    "mappingbehavior",
    "otherresourcetype",
    "parent",
    "poolid",
    "reservation",
    "resourcesubtype",
    "resourcetype",
    "virtualquantity",
    "virtualquantityunits",
    "weight",
    "busnumber",
    // CIM_StorageAllocationSettingData
    "access",
    "hostextentname",
    "hostextentnameformat",
    "hostextentnamenamespace",
    "hostextentstartingaddress",
    "hostresourceblocksize",
    "otherhostextentnameformat",
    "otherhostextentnamenamespace",
    "virtualresourceblocksize",
    // CIM_EthernetPortAllocationSettingData
    "allowedpriorities",
    "allowedtoreceivemacaddresses",
    "allowedtoreceivevlans",
    "allowedtotransmitmacaddresses",
    "allowedtotransmitvlans",
    "defaultportvid",
    "defaultpriority",
    "desiredvlanendpointmode",
    "groupid",
    "managerid",
    "networkportprofileid",
    "networkportprofileidtype",
    "otherendpointmode",
    "othernetworkportprofileidtypeinfo",
    "portcorrelationid",
    "portvid",
    "promiscuous",
    "receivebandwidthlimit",
    "receivebandwidthreservation",
    "sourcemacfilteringenabled",
    // CIM_VirtualSystemSettingData
    "virtualsystemidentifier",
    "virtualsystemtype",
    "automaticrecoveryaction",
    "automaticshutdownaction",
    "automaticstartupaction",
    "automaticstartupactiondelay",
    "automaticstartupactionsequencenumber",
    "configurationdataroot",
    "configurationfile",
    "configurationid",
    "creationtime",
    "logdataroot",
    "notes",
    "recoveryfile",
    "snapshotdataroot",
    "suspenddataroot",
    "swapfiledataroot",
];

fn is_cim(el: &XmlElement) -> bool {
    el.name
        .ns
        .as_deref()
        .is_some_and(|ns| ns.starts_with(NS_CIM_PREFIX))
}

impl Cx {
    fn warn(&mut self, msg: String) {
        if self.seen.insert(msg.clone()) {
            self.warnings.push(msg);
        }
    }

    /// An element ovm does not model: refuse it if required, else keep it with a warning.
    fn unknown(&mut self, el: &XmlElement, context: &str, extra: &mut Extensions) -> Result<()> {
        let name = display_name(el);
        let explicit = opt_bool(el, "required", &name)?;
        let recognised = recognised_extension(el);
        let section = kind(el).unwrap_or(&el.name.local).ends_with("Section");
        let required = explicit.unwrap_or(section && !recognised);
        if required {
            return Err(OvfError::UnknownRequired {
                element: name,
                context: context.to_owned(),
            });
        }
        if !recognised {
            self.warn(format!(
                "{name} in {context} is not understood; kept, not honoured"
            ));
        }
        extra.elements.push(el.clone());
        Ok(())
    }

    fn envelope(&mut self, root: &XmlElement) -> Result<Envelope> {
        let ns = root.name.ns.clone().unwrap_or_default();
        let version = match version_of(&ns) {
            Some(v) if root.name.local == "Envelope" => v,
            _ if ns.starts_with("http://schemas.dmtf.org/ovf/envelope/")
                && root.name.local == "Envelope" =>
            {
                return Err(OvfError::UnsupportedVersion { namespace: ns });
            }
            _ => {
                return Err(OvfError::NotAnEnvelope {
                    found: root.name.to_string(),
                });
            }
        };
        let mut extra = Extensions {
            attrs: root
                .attrs
                .iter()
                .filter(|a| {
                    let lang = a.name.ns.as_deref() == Some(NS_XML) && a.name.local == "lang";
                    let version = is_ovf_attr(a) && a.name.local == "version";
                    !lang && !version
                })
                .cloned()
                .collect(),
            elements: Vec::new(),
        };
        let lang = root
            .attrs
            .iter()
            .find(|a| a.name.ns.as_deref() == Some(NS_XML) && a.name.local == "lang")
            .map(|a| a.value.clone());
        let mut references = None;
        let mut disk_section = None;
        let mut network_section = None;
        let mut deployment_options = None;
        let mut content = None;
        for child in root.elements() {
            match kind(child) {
                Some("References") => {
                    once(&mut references, self.references(child)?, "References")?;
                }
                Some("DiskSection") => {
                    once(&mut disk_section, self.disk_section(child)?, "DiskSection")?;
                }
                Some("NetworkSection") => {
                    once(
                        &mut network_section,
                        self.network_section(child)?,
                        "NetworkSection",
                    )?;
                }
                Some("DeploymentOptionSection") => once(
                    &mut deployment_options,
                    self.deployment_options(child)?,
                    "DeploymentOptionSection",
                )?,
                Some("VirtualSystem") | Some("VirtualSystemCollection") => {
                    once(&mut content, self.content(child)?, "VirtualSystem")?;
                }
                _ => self.unknown(child, "Envelope", &mut extra)?,
            }
        }
        let content = content.ok_or_else(|| OvfError::Missing {
            what: "VirtualSystem or VirtualSystemCollection".into(),
            context: "Envelope".into(),
        })?;
        Ok(Envelope {
            version,
            lang,
            references: references.unwrap_or_default(),
            disk_section,
            network_section,
            deployment_options,
            content,
            extra,
        })
    }

    fn references(&mut self, el: &XmlElement) -> Result<Vec<FileReference>> {
        let mut files = Vec::new();
        let mut ignored = Extensions::default();
        for child in el.elements() {
            if kind(child) != Some("File") {
                self.unknown(child, "References", &mut ignored)?;
                continue;
            }
            let id = required_attr(child, "id", "References/File")?.to_owned();
            let ctx = format!("File {id}");
            let href = required_attr(child, "href", &ctx)?.to_owned();
            let size = attr(child, "size")
                .map(|v| parse_size(&format!("{ctx} ovf:size"), v))
                .transpose()?;
            let chunk_size = attr(child, "chunkSize")
                .map(|v| parse_size(&format!("{ctx} ovf:chunkSize"), v))
                .transpose()?;
            files.push(FileReference {
                id,
                href,
                size,
                compression: attr(child, "compression").map(str::to_owned),
                chunk_size,
                extra_attrs: extra_attrs(
                    child,
                    &["id", "href", "size", "compression", "chunkSize"],
                ),
            });
        }
        if !ignored.elements.is_empty() {
            self.warn("unknown elements in References are dropped".into());
        }
        Ok(files)
    }

    fn disk_section(&mut self, el: &XmlElement) -> Result<DiskSection> {
        let mut s = DiskSection {
            required: is_required(el, "DiskSection")?,
            info: String::new(),
            disks: Vec::new(),
            extra: Extensions {
                attrs: extra_attrs(el, &["required"]),
                elements: Vec::new(),
            },
        };
        for child in el.elements() {
            match kind(child) {
                Some("Info") => s.info = text(child),
                Some("Disk") => s.disks.push(self.disk(child)?),
                _ => self.unknown(child, "DiskSection", &mut s.extra)?,
            }
        }
        Ok(s)
    }

    fn disk(&mut self, el: &XmlElement) -> Result<VirtualDisk> {
        let disk_id = required_attr(el, "diskId", "DiskSection/Disk")?.to_owned();
        let ctx = format!("Disk {disk_id}");
        let cap_text = required_attr(el, "capacity", &ctx)?;
        let capacity = parse_capacity(&format!("{ctx} ovf:capacity"), cap_text)?;
        let populated_size = attr(el, "populatedSize")
            .map(|v| parse_size(&format!("{ctx} ovf:populatedSize"), v))
            .transpose()?;
        let mut ignored = Extensions::default();
        for child in el.elements() {
            self.unknown(child, &ctx, &mut ignored)?;
        }
        Ok(VirtualDisk {
            disk_id,
            // An empty fileRef (as some exporters write) means a blank disk.
            file_ref: attr(el, "fileRef")
                .filter(|v| !v.trim().is_empty())
                .map(str::to_owned),
            capacity,
            capacity_units: attr(el, "capacityAllocationUnits").map(str::to_owned),
            populated_size,
            format: attr(el, "format").map(str::to_owned),
            parent_ref: attr(el, "parentRef")
                .filter(|v| !v.trim().is_empty())
                .map(str::to_owned),
            extra_attrs: extra_attrs(
                el,
                &[
                    "diskId",
                    "fileRef",
                    "capacity",
                    "capacityAllocationUnits",
                    "populatedSize",
                    "format",
                    "parentRef",
                ],
            )
            .into_iter()
            // Empty parentRef/fileRef (oVirt, vSphere) mean "none".
            .filter(|a| {
                !(matches!(a.name.local.as_str(), "parentRef" | "fileRef")
                    && a.value.trim().is_empty())
            })
            .collect(),
        })
    }

    fn network_section(&mut self, el: &XmlElement) -> Result<NetworkSection> {
        let mut s = NetworkSection {
            required: is_required(el, "NetworkSection")?,
            info: String::new(),
            networks: Vec::new(),
            extra: Extensions {
                attrs: extra_attrs(el, &["required"]),
                elements: Vec::new(),
            },
        };
        for child in el.elements() {
            match kind(child) {
                Some("Info") => s.info = text(child),
                Some("Network") => {
                    let name = required_attr(child, "name", "NetworkSection/Network")?.to_owned();
                    let mut n = NetworkDef {
                        description: None,
                        extra: Extensions {
                            attrs: extra_attrs(child, &["name"]),
                            elements: Vec::new(),
                        },
                        name,
                    };
                    for g in child.elements() {
                        match kind(g) {
                            Some("Description") => n.description = Some(text(g)),
                            _ => {
                                let ctx = format!("Network {}", n.name);
                                self.unknown(g, &ctx, &mut n.extra)?
                            }
                        }
                    }
                    s.networks.push(n);
                }
                _ => self.unknown(child, "NetworkSection", &mut s.extra)?,
            }
        }
        Ok(s)
    }

    fn deployment_options(&mut self, el: &XmlElement) -> Result<DeploymentOptionSection> {
        let mut s = DeploymentOptionSection {
            required: is_required(el, "DeploymentOptionSection")?,
            info: String::new(),
            configurations: Vec::new(),
            extra: Extensions {
                attrs: extra_attrs(el, &["required"]),
                elements: Vec::new(),
            },
        };
        for child in el.elements() {
            match kind(child) {
                Some("Info") => s.info = text(child),
                Some("Configuration") => {
                    let id = required_attr(child, "id", "DeploymentOptionSection/Configuration")?
                        .to_owned();
                    let ctx = format!("Configuration {id}");
                    let mut c = DeploymentConfiguration {
                        default: opt_bool(child, "default", &ctx)?.unwrap_or(false),
                        label: String::new(),
                        description: String::new(),
                        extra: Extensions {
                            attrs: extra_attrs(child, &["id", "default"]),
                            elements: Vec::new(),
                        },
                        id,
                    };
                    for g in child.elements() {
                        match kind(g) {
                            Some("Label") => c.label = text(g),
                            Some("Description") => c.description = text(g),
                            _ => self.unknown(g, &ctx, &mut c.extra)?,
                        }
                    }
                    s.configurations.push(c);
                }
                _ => self.unknown(child, "DeploymentOptionSection", &mut s.extra)?,
            }
        }
        Ok(s)
    }

    fn content(&mut self, el: &XmlElement) -> Result<Content> {
        let id = attr(el, "id").unwrap_or_default().to_owned();
        if kind(el) == Some("VirtualSystemCollection") {
            let ctx = format!("VirtualSystemCollection {id}");
            let mut c = VirtualSystemCollection {
                id,
                info: String::new(),
                name: None,
                startup: None,
                products: Vec::new(),
                eulas: Vec::new(),
                annotation: None,
                resource_allocation: None,
                members: Vec::new(),
                extra: Extensions {
                    attrs: extra_attrs(el, &["id"]),
                    elements: Vec::new(),
                },
            };
            for child in el.elements() {
                match kind(child) {
                    Some("Info") => c.info = text(child),
                    Some("Name") => c.name = Some(text(child)),
                    Some("StartupSection") => {
                        once(&mut c.startup, self.startup(child, &ctx)?, "StartupSection")?
                    }
                    Some("ProductSection") => c.products.push(self.product(child, &ctx)?),
                    Some("EulaSection") => c.eulas.push(self.eula(child, &ctx)?),
                    Some("AnnotationSection") => once(
                        &mut c.annotation,
                        self.annotation(child, &ctx)?,
                        "AnnotationSection",
                    )?,
                    Some("ResourceAllocationSection") => once(
                        &mut c.resource_allocation,
                        self.resource_allocation(child, &ctx)?,
                        "ResourceAllocationSection",
                    )?,
                    Some("VirtualSystem") | Some("VirtualSystemCollection") => {
                        c.members.push(self.content(child)?)
                    }
                    _ => self.unknown(child, &ctx, &mut c.extra)?,
                }
            }
            return Ok(Content::Collection(Box::new(c)));
        }
        let ctx = format!("VirtualSystem {id}");
        let mut s = VirtualSystem {
            id,
            info: String::new(),
            name: None,
            operating_system: None,
            hardware: Vec::new(),
            products: Vec::new(),
            eulas: Vec::new(),
            annotation: None,
            install: None,
            extra: Extensions {
                attrs: extra_attrs(el, &["id"]),
                elements: Vec::new(),
            },
        };
        for child in el.elements() {
            match kind(child) {
                Some("Info") => s.info = text(child),
                Some("Name") => s.name = Some(text(child)),
                Some("OperatingSystemSection") => once(
                    &mut s.operating_system,
                    self.operating_system(child, &ctx)?,
                    "OperatingSystemSection",
                )?,
                Some("VirtualHardwareSection") => s.hardware.push(self.hardware(child, &ctx)?),
                Some("ProductSection") => s.products.push(self.product(child, &ctx)?),
                Some("EulaSection") => s.eulas.push(self.eula(child, &ctx)?),
                Some("AnnotationSection") => once(
                    &mut s.annotation,
                    self.annotation(child, &ctx)?,
                    "AnnotationSection",
                )?,
                Some("InstallSection") => {
                    once(&mut s.install, self.install(child, &ctx)?, "InstallSection")?
                }
                _ => self.unknown(child, &ctx, &mut s.extra)?,
            }
        }
        Ok(Content::System(Box::new(s)))
    }

    fn operating_system(
        &mut self,
        el: &XmlElement,
        parent: &str,
    ) -> Result<OperatingSystemSection> {
        let ctx = format!("{parent} OperatingSystemSection");
        let mut s = OperatingSystemSection {
            required: is_required(el, &ctx)?,
            info: String::new(),
            id: attr(el, "id").map(str::to_owned),
            version: attr(el, "version").map(str::to_owned),
            description: None,
            extra: Extensions {
                attrs: extra_attrs(el, &["required", "id", "version"]),
                elements: Vec::new(),
            },
        };
        for child in el.elements() {
            match kind(child) {
                Some("Info") => s.info = text(child),
                Some("Description") => s.description = Some(text(child)),
                _ => self.unknown(child, &ctx, &mut s.extra)?,
            }
        }
        Ok(s)
    }

    fn hardware(&mut self, el: &XmlElement, parent: &str) -> Result<VirtualHardwareSection> {
        let ctx = format!("{parent} VirtualHardwareSection");
        let mut s = VirtualHardwareSection {
            required: is_required(el, &ctx)?,
            info: String::new(),
            id: attr(el, "id").map(str::to_owned),
            transport: attr(el, "transport").map(str::to_owned),
            system: None,
            items: Vec::new(),
            extra: Extensions {
                attrs: extra_attrs(el, &["required", "id", "transport"]),
                elements: Vec::new(),
            },
        };
        for child in el.elements() {
            match kind(child) {
                Some("Info") => s.info = text(child),
                Some("System") => {
                    let mut sys = SystemSettings::default();
                    sys.extra.attrs = extra_attrs(child, &[]);
                    let sctx = format!("{ctx} System");
                    for g in child.elements() {
                        if is_cim(g) {
                            sys.properties.push(self.cim_property(g, &sctx)?);
                        } else {
                            self.unknown(g, &sctx, &mut sys.extra)?;
                        }
                    }
                    once(&mut s.system, sys, "System")?;
                }
                Some(k @ ("Item" | "StorageItem" | "EthernetPortItem")) => {
                    let item_kind = match k {
                        "StorageItem" => ItemKind::StorageItem,
                        "EthernetPortItem" => ItemKind::EthernetPortItem,
                        _ => ItemKind::Item,
                    };
                    s.items.push(self.item(child, item_kind, &ctx)?);
                }
                _ => self.unknown(child, &ctx, &mut s.extra)?,
            }
        }
        Ok(s)
    }

    fn cim_property(&mut self, el: &XmlElement, ctx: &str) -> Result<CimProperty> {
        let name = el.name.local.clone();
        if !CIM_PROPERTIES.contains(&name.to_ascii_lowercase().as_str()) {
            let display = el.name.to_string();
            if opt_bool(el, "required", &display)? == Some(true) {
                return Err(OvfError::UnknownRequired {
                    element: display,
                    context: ctx.to_owned(),
                });
            }
            self.warn(format!(
                "{display} in {ctx} is not a CIM property ovm knows; kept"
            ));
        }
        Ok(CimProperty {
            ns: el.name.ns.clone().unwrap_or_default(),
            name,
            value: text(el),
            attrs: el.attrs.clone(),
        })
    }

    fn item(&mut self, el: &XmlElement, item_kind: ItemKind, parent: &str) -> Result<Item> {
        let ctx = format!("{parent} {}", item_kind.element_name());
        let mut item = Item {
            kind: item_kind,
            required: is_required(el, &ctx)?,
            configuration: attr(el, "configuration").map(str::to_owned),
            bound: attr(el, "bound").map(str::to_owned),
            properties: Vec::new(),
            extra: Extensions {
                attrs: extra_attrs(el, &["required", "configuration", "bound"]),
                elements: Vec::new(),
            },
        };
        for child in el.elements() {
            if is_cim(child) {
                let p = self.cim_property(child, &ctx)?;
                item.properties.push(p);
            } else {
                let ictx = format!("{ctx} {}", item.label());
                self.unknown(child, &ictx, &mut item.extra)?;
            }
        }
        if let Some(rt) = item.get("ResourceType")
            && rt.trim().parse::<u32>().is_err()
        {
            return Err(OvfError::value(
                format!("{ctx} {} ResourceType", item.label()),
                rt,
                "expected a CIM resource type number",
            ));
        }
        Ok(item)
    }

    fn product(&mut self, el: &XmlElement, parent: &str) -> Result<ProductSection> {
        let ctx = format!("{parent} ProductSection");
        let mut s = ProductSection {
            required: is_required(el, &ctx)?,
            info: String::new(),
            class: attr(el, "class").map(str::to_owned),
            instance: attr(el, "instance").map(str::to_owned),
            product: None,
            vendor: None,
            version: None,
            full_version: None,
            product_url: None,
            vendor_url: None,
            app_url: None,
            entries: Vec::new(),
            extra: Extensions {
                attrs: extra_attrs(el, &["required", "class", "instance"]),
                elements: Vec::new(),
            },
        };
        for child in el.elements() {
            match kind(child) {
                Some("Info") => s.info = text(child),
                Some("Product") => s.product = Some(text(child)),
                Some("Vendor") => s.vendor = Some(text(child)),
                Some("Version") => s.version = Some(text(child)),
                Some("FullVersion") => s.full_version = Some(text(child)),
                Some("ProductUrl") => s.product_url = Some(text(child)),
                Some("VendorUrl") => s.vendor_url = Some(text(child)),
                Some("AppUrl") => s.app_url = Some(text(child)),
                Some("Category") => s.entries.push(ProductEntry::Category(text(child))),
                Some("Property") => s
                    .entries
                    .push(ProductEntry::Property(self.property(child, &ctx)?)),
                _ => self.unknown(child, &ctx, &mut s.extra)?,
            }
        }
        Ok(s)
    }

    fn property(&mut self, el: &XmlElement, parent: &str) -> Result<Property> {
        let key = required_attr(el, "key", &format!("{parent} Property"))?.to_owned();
        let ctx = format!("{parent} Property {key}");
        let mut p = Property {
            type_: attr(el, "type").unwrap_or("string").to_owned(),
            qualifiers: attr(el, "qualifiers").map(str::to_owned),
            user_configurable: opt_bool(el, "userConfigurable", &ctx)?,
            default: attr(el, "value").map(str::to_owned),
            password: opt_bool(el, "password", &ctx)?,
            label: None,
            description: None,
            values: Vec::new(),
            extra: Extensions {
                attrs: extra_attrs(
                    el,
                    &[
                        "key",
                        "type",
                        "qualifiers",
                        "userConfigurable",
                        "value",
                        "password",
                    ],
                ),
                elements: Vec::new(),
            },
            key,
        };
        for child in el.elements() {
            match kind(child) {
                Some("Label") => p.label = Some(text(child)),
                Some("Description") => p.description = Some(text(child)),
                Some("Value") => p.values.push(PropertyValue {
                    value: required_attr(child, "value", &ctx)?.to_owned(),
                    configuration: attr(child, "configuration").map(str::to_owned),
                }),
                _ => self.unknown(child, &ctx, &mut p.extra)?,
            }
        }
        Ok(p)
    }

    fn eula(&mut self, el: &XmlElement, parent: &str) -> Result<EulaSection> {
        let ctx = format!("{parent} EulaSection");
        let mut s = EulaSection {
            required: is_required(el, &ctx)?,
            info: String::new(),
            license: String::new(),
            extra: Extensions {
                attrs: extra_attrs(el, &["required"]),
                elements: Vec::new(),
            },
        };
        for child in el.elements() {
            match kind(child) {
                Some("Info") => s.info = text(child),
                Some("License") => s.license = text(child),
                _ => self.unknown(child, &ctx, &mut s.extra)?,
            }
        }
        Ok(s)
    }

    fn annotation(&mut self, el: &XmlElement, parent: &str) -> Result<AnnotationSection> {
        let ctx = format!("{parent} AnnotationSection");
        let mut s = AnnotationSection {
            required: is_required(el, &ctx)?,
            info: String::new(),
            annotation: String::new(),
            extra: Extensions {
                attrs: extra_attrs(el, &["required"]),
                elements: Vec::new(),
            },
        };
        for child in el.elements() {
            match kind(child) {
                Some("Info") => s.info = text(child),
                Some("Annotation") => s.annotation = text(child),
                _ => self.unknown(child, &ctx, &mut s.extra)?,
            }
        }
        Ok(s)
    }

    fn install(&mut self, el: &XmlElement, parent: &str) -> Result<InstallSection> {
        let ctx = format!("{parent} InstallSection");
        let mut s = InstallSection {
            required: is_required(el, &ctx)?,
            info: String::new(),
            initial_boot_stop_delay: opt_u32(el, "initialBootStopDelay", &ctx)?,
            extra: Extensions {
                attrs: extra_attrs(el, &["required", "initialBootStopDelay"]),
                elements: Vec::new(),
            },
        };
        for child in el.elements() {
            match kind(child) {
                Some("Info") => s.info = text(child),
                _ => self.unknown(child, &ctx, &mut s.extra)?,
            }
        }
        Ok(s)
    }

    fn startup(&mut self, el: &XmlElement, parent: &str) -> Result<StartupSection> {
        let ctx = format!("{parent} StartupSection");
        let mut s = StartupSection {
            required: is_required(el, &ctx)?,
            info: String::new(),
            items: Vec::new(),
            extra: Extensions {
                attrs: extra_attrs(el, &["required"]),
                elements: Vec::new(),
            },
        };
        for child in el.elements() {
            match kind(child) {
                Some("Info") => s.info = text(child),
                Some("Item") => {
                    let id = required_attr(child, "id", &ctx)?.to_owned();
                    let ictx = format!("{ctx} Item {id}");
                    s.items.push(StartupItem {
                        order: opt_u32(child, "order", &ictx)?,
                        start_delay: opt_u32(child, "startDelay", &ictx)?,
                        waiting_for_guest: opt_bool(child, "waitingForGuest", &ictx)?,
                        stop_delay: opt_u32(child, "stopDelay", &ictx)?,
                        start_action: attr(child, "startAction").map(str::to_owned),
                        stop_action: attr(child, "stopAction").map(str::to_owned),
                        extra_attrs: extra_attrs(
                            child,
                            &[
                                "id",
                                "order",
                                "startDelay",
                                "waitingForGuest",
                                "stopDelay",
                                "startAction",
                                "stopAction",
                            ],
                        ),
                        id,
                    });
                }
                _ => self.unknown(child, &ctx, &mut s.extra)?,
            }
        }
        Ok(s)
    }

    fn resource_allocation(
        &mut self,
        el: &XmlElement,
        parent: &str,
    ) -> Result<ResourceAllocationSection> {
        let ctx = format!("{parent} ResourceAllocationSection");
        let mut s = ResourceAllocationSection {
            required: is_required(el, &ctx)?,
            info: String::new(),
            items: Vec::new(),
            extra: Extensions {
                attrs: extra_attrs(el, &["required"]),
                elements: Vec::new(),
            },
        };
        for child in el.elements() {
            match kind(child) {
                Some("Info") => s.info = text(child),
                Some("Item") => s.items.push(self.item(child, ItemKind::Item, &ctx)?),
                _ => self.unknown(child, &ctx, &mut s.extra)?,
            }
        }
        Ok(s)
    }
}

fn once<T>(slot: &mut Option<T>, value: T, what: &str) -> Result<()> {
    if slot.is_some() {
        return Err(OvfError::Duplicate {
            what: "section".into(),
            id: what.into(),
        });
    }
    *slot = Some(value);
    Ok(())
}

fn parse_capacity(what: &str, v: &str) -> Result<Capacity> {
    let t = v.trim();
    if let Some(inner) = t.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        if inner.is_empty() || inner.contains(['$', '{', '}']) {
            return Err(OvfError::value(what, v, "malformed property reference"));
        }
        return Ok(Capacity::Property(inner.to_owned()));
    }
    Ok(Capacity::Value(parse_size(what, v)?))
}

/// Checks an `ovf:href` against the policy: URLs, absolute paths and `..` components are
/// refused unless allowed; NUL, backslashes and control characters always are.
pub fn check_href(href: &str, policy: HrefPolicy) -> Result<()> {
    let bad = |reason: &str| OvfError::BadHref {
        href: href.to_owned(),
        reason: reason.to_owned(),
    };
    if href.trim().is_empty() {
        return Err(bad("empty"));
    }
    let decoded = percent_decode(href).ok_or_else(|| bad("invalid percent-encoding"))?;
    if decoded.chars().any(|c| c.is_control()) || decoded.contains('\\') {
        return Err(bad("contains a control character or a backslash"));
    }
    if let Some((scheme, _)) = href.split_once(':')
        && !scheme.is_empty()
        && scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'))
    {
        if scheme.len() == 1 {
            if !policy.allow_absolute {
                return Err(bad("is an absolute (drive letter) path"));
            }
            return Ok(());
        }
        if !policy.allow_urls {
            return Err(bad(&format!(
                "is a URL ({scheme}:); only files inside the package are read"
            )));
        }
        return Ok(());
    }
    if decoded.starts_with('/') && !policy.allow_absolute {
        return Err(bad("is an absolute path"));
    }
    if decoded.split('/').any(|c| c == "..") && !policy.allow_parent {
        return Err(bad("contains a `..` component (escapes the package)"));
    }
    Ok(())
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Disk capacity in bytes, resolving `${property}` references with property defaults.
pub fn disk_capacity_bytes(env: &Envelope, disk: &VirtualDisk, limits: &Limits) -> Result<u64> {
    let what = format!("Disk {} ovf:capacity", disk.disk_id);
    let units = match &disk.capacity_units {
        Some(u) => bytes_per_unit(u).map_err(|_| {
            OvfError::value(
                format!("Disk {} ovf:capacityAllocationUnits", disk.disk_id),
                u,
                "not a byte unit",
            )
        })?,
        None => 1,
    };
    let (value, shown) = match &disk.capacity {
        Capacity::Value(v) => (*v, v.to_string()),
        Capacity::Property(key) => {
            let prop = env
                .all_properties()
                .into_iter()
                .find(|p| &p.key == key)
                .ok_or_else(|| OvfError::DanglingReference {
                    what: what.clone(),
                    target: "property".into(),
                    id: key.clone(),
                })?;
            let text = prop.default.clone().ok_or_else(|| OvfError::Missing {
                what: "ovf:value".into(),
                context: format!("Property {key} (used as {what})"),
            })?;
            (
                parse_size(&format!("{what} (property {key})"), &text)?,
                text,
            )
        }
    };
    let bytes = value
        .checked_mul(units)
        .ok_or_else(|| OvfError::size(&what, &shown, "overflows u64 bytes"))?;
    if bytes > limits.max_disk_bytes {
        return Err(OvfError::size(
            &what,
            &shown,
            format!(
                "{bytes} bytes exceeds the limit of {} bytes",
                limits.max_disk_bytes
            ),
        ));
    }
    Ok(bytes)
}

/// Parses a `HostResource` value: `ovf:/disk/ID` (the standard), `/disk/ID` (OVF 0.9),
/// `ovf://disk/ID` (older exporters), `ovf:/file/ID`, any case of the `ovf:` scheme.
/// Anything else is `None`, and the item is reported as not honoured, naming the value.
pub fn host_resource(value: &str) -> Option<(&'static str, &str)> {
    let v = value.trim();
    let v = match v.get(..4) {
        Some(scheme) if scheme.eq_ignore_ascii_case("ovf:") => &v[4..],
        _ => v,
    };
    let v = v.trim_start_matches('/');
    for kind in ["disk", "file"] {
        if let Some(id) = v
            .strip_prefix(kind)
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|id| !id.is_empty())
        {
            return Some((kind, id));
        }
    }
    None
}

/// Checks references, hrefs and declared sizes.
pub fn validate(env: &Envelope, limits: &Limits, warnings: &mut Vec<String>) -> Result<()> {
    let mut ids = BTreeSet::new();
    for f in &env.references {
        if !ids.insert(f.id.as_str()) {
            return Err(OvfError::Duplicate {
                what: "File id".into(),
                id: f.id.clone(),
            });
        }
        if let Some(size) = f.size
            && size > limits.max_file_bytes
        {
            return Err(OvfError::size(
                format!("File {} ovf:size", f.id),
                size.to_string(),
                format!("exceeds the limit of {} bytes", limits.max_file_bytes),
            ));
        }
        if let Some(chunk) = f.chunk_size {
            if chunk == 0 {
                return Err(OvfError::size(
                    format!("File {} ovf:chunkSize", f.id),
                    "0",
                    "zero",
                ));
            }
            if chunk > limits.max_file_bytes {
                return Err(OvfError::size(
                    format!("File {} ovf:chunkSize", f.id),
                    chunk.to_string(),
                    format!("exceeds the limit of {} bytes", limits.max_file_bytes),
                ));
            }
        }
        if let Some(c) = &f.compression
            && !matches!(c.trim(), "gzip" | "identity")
        {
            return Err(OvfError::value(
                format!("File {} ovf:compression", f.id),
                c,
                "only gzip and identity are defined",
            ));
        }
        check_href(&f.href, limits.href)?;
    }
    let mut disk_ids = BTreeSet::new();
    if let Some(ds) = &env.disk_section {
        for d in &ds.disks {
            if !disk_ids.insert(d.disk_id.as_str()) {
                return Err(OvfError::Duplicate {
                    what: "Disk diskId".into(),
                    id: d.disk_id.clone(),
                });
            }
            if let Some(r) = &d.file_ref
                && env.file(r).is_none()
            {
                return Err(OvfError::DanglingReference {
                    what: format!("Disk {} ovf:fileRef", d.disk_id),
                    target: "File".into(),
                    id: r.clone(),
                });
            }
            match disk_capacity_bytes(env, d, limits) {
                Ok(_) => {}
                Err(OvfError::DanglingReference { id, .. }) => warnings.push(format!(
                    "Disk {} capacity refers to property {id}, which no ProductSection defines",
                    d.disk_id
                )),
                Err(OvfError::Missing { context, .. }) => {
                    warnings.push(format!("{context} has no default value"))
                }
                Err(e) => return Err(e),
            }
            if let Some(p) = d.populated_size
                && p > limits.max_disk_bytes
            {
                return Err(OvfError::size(
                    format!("Disk {} ovf:populatedSize", d.disk_id),
                    p.to_string(),
                    format!("exceeds the limit of {} bytes", limits.max_disk_bytes),
                ));
            }
        }
        for d in &ds.disks {
            if let Some(p) = &d.parent_ref
                && !disk_ids.contains(p.as_str())
            {
                return Err(OvfError::DanglingReference {
                    what: format!("Disk {} ovf:parentRef", d.disk_id),
                    target: "Disk".into(),
                    id: p.clone(),
                });
            }
        }
    }
    let networks: BTreeSet<&str> = env
        .network_section
        .iter()
        .flat_map(|s| s.networks.iter().map(|n| n.name.as_str()))
        .collect();
    let configs: BTreeSet<&str> = env
        .deployment_options
        .iter()
        .flat_map(|s| s.configurations.iter().map(|c| c.id.as_str()))
        .collect();
    let mut system_ids = BTreeSet::new();
    validate_content(
        env,
        &env.content,
        &networks,
        &configs,
        &mut system_ids,
        warnings,
    )
}

fn validate_content<'a>(
    env: &Envelope,
    content: &'a Content,
    networks: &BTreeSet<&str>,
    configs: &BTreeSet<&str>,
    system_ids: &mut BTreeSet<&'a str>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    if !content.id().is_empty() && !system_ids.insert(content.id()) {
        return Err(OvfError::Duplicate {
            what: "VirtualSystem id".into(),
            id: content.id().to_owned(),
        });
    }
    match content {
        Content::System(s) => {
            for hw in &s.hardware {
                for item in &hw.items {
                    let ctx = format!("VirtualSystem {} item {}", s.id, item.label());
                    for hr in item.get_all("HostResource") {
                        match host_resource(hr) {
                            Some(("disk", id)) if env.disk(id).is_none() => {
                                return Err(OvfError::DanglingReference {
                                    what: ctx,
                                    target: "Disk".into(),
                                    id: id.to_owned(),
                                });
                            }
                            Some(("file", id)) if env.file(id).is_none() => {
                                return Err(OvfError::DanglingReference {
                                    what: ctx,
                                    target: "File".into(),
                                    id: id.to_owned(),
                                });
                            }
                            _ => {}
                        }
                    }
                    if item.resource_kind() == Some(ResourceKind::Ethernet) {
                        for c in item.get_all("Connection") {
                            if !c.is_empty() && !networks.contains(c) {
                                warnings.push(format!(
                                    "{ctx} connects to network {c:?}, which NetworkSection does not declare"
                                ));
                            }
                        }
                    }
                    if let Some(list) = &item.configuration {
                        for c in list.split_whitespace() {
                            if !configs.contains(c) {
                                warnings.push(format!(
                                    "{ctx} names deployment configuration {c:?}, which is not declared"
                                ));
                            }
                        }
                    }
                }
            }
        }
        Content::Collection(c) => {
            for m in &c.members {
                validate_content(env, m, networks, configs, system_ids, warnings)?;
            }
            if let Some(st) = &c.startup {
                for it in &st.items {
                    if !c.members.iter().any(|m| m.id() == it.id) {
                        warnings.push(format!(
                            "StartupSection of {} names {:?}, which is not a member",
                            c.id, it.id
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn host_resources_resolve_the_forms_packages_write() {
        for (value, want) in [
            ("ovf:/disk/vmdisk1", Some(("disk", "vmdisk1"))),
            ("/disk/vmdisk1", Some(("disk", "vmdisk1"))),
            ("ovf://disk/vmdisk1", Some(("disk", "vmdisk1"))),
            ("OVF:/disk/vmdisk1", Some(("disk", "vmdisk1"))),
            (" ovf:/file/file1 ", Some(("file", "file1"))),
            ("ovf:/disk/", None),
            ("VOL", None),
            ("diskette/x", None),
            ("", None),
        ] {
            assert_eq!(host_resource(value), want, "{value:?}");
        }
    }
    use super::*;

    #[test]
    fn hrefs() {
        let p = HrefPolicy::default();
        assert!(check_href("disk1.vmdk", p).is_ok());
        assert!(check_href("sub/disk1.vmdk", p).is_ok());
        for bad in [
            "../x.vmdk",
            "a/../../x",
            "/etc/passwd",
            "http://example.invalid/x.vmdk",
            "file:///etc/passwd",
            "C:\\x",
            "c:x",
            "%2e%2e/x",
            "a\\b",
            "",
        ] {
            assert!(
                matches!(check_href(bad, p), Err(OvfError::BadHref { .. })),
                "{bad}"
            );
        }
        let lax = HrefPolicy {
            allow_urls: true,
            allow_absolute: true,
            allow_parent: true,
        };
        assert!(check_href("../x.vmdk", lax).is_ok());
        assert!(check_href("http://h/x", lax).is_ok());
    }
}
