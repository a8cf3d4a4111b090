//! `DiskSection`: virtual disks, their capacities (a size or a `${property}`) and the
//! files and parent disks they name (checked later, in `validate`).

use crate::error::{OvfError, Result};
use crate::model::{Capacity, DiskSection, Extensions, VirtualDisk};
use crate::units::parse_size;
use crate::xml::XmlElement;

use super::attrs::{attr, extra_attrs, is_required, required_attr, section_extensions, text};
use super::reader::{Cx, kind};

impl Cx {
    pub(super) fn disk_section(&mut self, el: &XmlElement) -> Result<DiskSection> {
        let mut s = DiskSection {
            required: is_required(el, "DiskSection")?,
            info: String::new(),
            disks: Vec::new(),
            extra: section_extensions(el),
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
}

/// A capacity as written: bytes in the declared units, or a `${key}` property reference.
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
