//! `ProductSection`: product metadata and the properties a deployment may set (whose
//! defaults disk capacities can refer to).

use crate::error::Result;
use crate::model::{Extensions, ProductEntry, ProductSection, Property, PropertyValue};
use crate::xml::XmlElement;

use super::attrs::{attr, extra_attrs, is_required, opt_bool, required_attr, text};
use super::reader::{Cx, kind};

impl Cx {
    pub(super) fn product(&mut self, el: &XmlElement, parent: &str) -> Result<ProductSection> {
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
}
