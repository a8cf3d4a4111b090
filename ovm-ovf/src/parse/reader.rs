//! The reader's state and the rules every section reader shares: what an element is
//! called in any dialect, and what becomes of one ovm does not model.

use std::collections::HashSet;

use crate::error::{OvfError, Result};
use crate::model::Extensions;
use crate::ns::{NS_OVM, NS_VBOX, NS_VMW, is_ovf_namespace};
use crate::xml::{QualName, XmlElement};

use super::attrs::opt_bool;

/// What one parse carries from section to section: the warnings, each said once.
#[derive(Default)]
pub(super) struct Cx {
    pub(super) warnings: Vec<String>,
    seen: HashSet<String>,
}

/// The OVF name of an element: its local name if it is in an OVF namespace (or none,
/// as oVirt writes), with 0.9's `Section`/`Content` + `xsi:type` resolved.
pub(super) fn kind(el: &XmlElement) -> Option<&str> {
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

impl Cx {
    pub(super) fn warn(&mut self, msg: String) {
        if self.seen.insert(msg.clone()) {
            self.warnings.push(msg);
        }
    }

    /// An element ovm does not model: refuse it if required, else keep it with a warning.
    pub(super) fn unknown(
        &mut self,
        el: &XmlElement,
        context: &str,
        extra: &mut Extensions,
    ) -> Result<()> {
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
}

/// Stores a section that may appear at most once; a second one is refused.
pub(super) fn once<T>(slot: &mut Option<T>, value: T, what: &str) -> Result<()> {
    if slot.is_some() {
        return Err(OvfError::Duplicate {
            what: "section".into(),
            id: what.into(),
        });
    }
    *slot = Some(value);
    Ok(())
}
