//! The envelope: which OVF version it is, its top-level sections (each at most once)
//! and the one VirtualSystem or VirtualSystemCollection it describes.

use crate::error::{OvfError, Result};
use crate::model::{
    DeploymentConfiguration, DeploymentOptionSection, Envelope, Extensions, OvfVersion,
};
use crate::ns::{NS_OVF_DMTF_DRAFT, NS_OVF_VMW_09, NS_OVF1, NS_OVF2, NS_XML};
use crate::xml::XmlElement;

use super::attrs::{
    extra_attrs, is_ovf_attr, is_required, opt_bool, required_attr, section_extensions, text,
};
use super::reader::{Cx, kind, once};

/// The version an envelope namespace declares; `None` for namespaces ovm does not read.
fn version_of(ns: &str) -> Option<OvfVersion> {
    match ns.strip_suffix('/').unwrap_or(ns) {
        NS_OVF1 => Some(OvfVersion::V1),
        NS_OVF2 => Some(OvfVersion::V2),
        NS_OVF_VMW_09 | NS_OVF_DMTF_DRAFT => Some(OvfVersion::V0_9),
        _ => None,
    }
}

impl Cx {
    pub(super) fn envelope(&mut self, root: &XmlElement) -> Result<Envelope> {
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

    fn deployment_options(&mut self, el: &XmlElement) -> Result<DeploymentOptionSection> {
        let mut s = DeploymentOptionSection {
            required: is_required(el, "DeploymentOptionSection")?,
            info: String::new(),
            configurations: Vec::new(),
            extra: section_extensions(el),
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
}
