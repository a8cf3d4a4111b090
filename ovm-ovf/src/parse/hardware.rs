//! `VirtualHardwareSection`: the system settings and the resource items (`Item`,
//! OVF 2's `StorageItem` and `EthernetPortItem`), and what an item's `HostResource`
//! names.

use crate::error::{OvfError, Result};
use crate::model::{Extensions, Item, ItemKind, SystemSettings, VirtualHardwareSection};
use crate::xml::XmlElement;

use super::attrs::{attr, extra_attrs, is_required, text};
use super::cim::is_cim;
use super::reader::{Cx, kind, once};

impl Cx {
    /// A hardware section of the system `parent` names (for messages).
    pub(super) fn hardware(
        &mut self,
        el: &XmlElement,
        parent: &str,
    ) -> Result<VirtualHardwareSection> {
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

    pub(super) fn item(
        &mut self,
        el: &XmlElement,
        item_kind: ItemKind,
        parent: &str,
    ) -> Result<Item> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
