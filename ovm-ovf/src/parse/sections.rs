//! The smaller sections of systems and collections: EULA, annotation, install,
//! startup order and resource allocation.

use crate::error::Result;
use crate::model::{
    AnnotationSection, EulaSection, Extensions, InstallSection, ItemKind,
    ResourceAllocationSection, StartupItem, StartupSection,
};
use crate::xml::XmlElement;

use super::attrs::{
    attr, extra_attrs, is_required, opt_bool, opt_u32, required_attr, section_extensions, text,
};
use super::reader::{Cx, kind};

impl Cx {
    pub(super) fn eula(&mut self, el: &XmlElement, parent: &str) -> Result<EulaSection> {
        let ctx = format!("{parent} EulaSection");
        let mut s = EulaSection {
            required: is_required(el, &ctx)?,
            info: String::new(),
            license: String::new(),
            extra: section_extensions(el),
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

    pub(super) fn annotation(
        &mut self,
        el: &XmlElement,
        parent: &str,
    ) -> Result<AnnotationSection> {
        let ctx = format!("{parent} AnnotationSection");
        let mut s = AnnotationSection {
            required: is_required(el, &ctx)?,
            info: String::new(),
            annotation: String::new(),
            extra: section_extensions(el),
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

    pub(super) fn install(&mut self, el: &XmlElement, parent: &str) -> Result<InstallSection> {
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

    pub(super) fn startup(&mut self, el: &XmlElement, parent: &str) -> Result<StartupSection> {
        let ctx = format!("{parent} StartupSection");
        let mut s = StartupSection {
            required: is_required(el, &ctx)?,
            info: String::new(),
            items: Vec::new(),
            extra: section_extensions(el),
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

    pub(super) fn resource_allocation(
        &mut self,
        el: &XmlElement,
        parent: &str,
    ) -> Result<ResourceAllocationSection> {
        let ctx = format!("{parent} ResourceAllocationSection");
        let mut s = ResourceAllocationSection {
            required: is_required(el, &ctx)?,
            info: String::new(),
            items: Vec::new(),
            extra: section_extensions(el),
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
