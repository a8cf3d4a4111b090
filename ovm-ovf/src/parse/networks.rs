//! `NetworkSection`: the logical networks items connect to.

use crate::error::Result;
use crate::model::{Extensions, NetworkDef, NetworkSection};
use crate::xml::XmlElement;

use super::attrs::{extra_attrs, is_required, required_attr, section_extensions, text};
use super::reader::{Cx, kind};

impl Cx {
    pub(super) fn network_section(&mut self, el: &XmlElement) -> Result<NetworkSection> {
        let mut s = NetworkSection {
            required: is_required(el, "NetworkSection")?,
            info: String::new(),
            networks: Vec::new(),
            extra: section_extensions(el),
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
}
