//! `VirtualSystem` and `VirtualSystemCollection` (nested to any depth), with the
//! sections they hold; the hardware, product and smaller sections have readers of
//! their own.

use crate::error::Result;
use crate::model::{
    Content, Extensions, OperatingSystemSection, VirtualSystem, VirtualSystemCollection,
};
use crate::xml::XmlElement;

use super::attrs::{attr, extra_attrs, is_required, text};
use super::reader::{Cx, kind, once};

impl Cx {
    /// A VirtualSystem or a VirtualSystemCollection, by its kind.
    pub(super) fn content(&mut self, el: &XmlElement) -> Result<Content> {
        let id = attr(el, "id").unwrap_or_default().to_owned();
        if kind(el) == Some("VirtualSystemCollection") {
            return Ok(Content::Collection(Box::new(self.collection(el, id)?)));
        }
        Ok(Content::System(Box::new(self.system(el, id)?)))
    }

    /// A collection: its own sections, then its members, each a system or a collection.
    fn collection(&mut self, el: &XmlElement, id: String) -> Result<VirtualSystemCollection> {
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
        Ok(c)
    }

    fn system(&mut self, el: &XmlElement, id: String) -> Result<VirtualSystem> {
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
        Ok(s)
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
}
