//! Writing the model as an OVF 1.x or 2.0 descriptor.
//!
//! The output uses the `ovf:` prefix for every OVF element and attribute, declares every
//! namespace on the envelope, and keeps extension attributes and elements where they
//! were found, so that parse → write → parse gives back an equal model.

use crate::model::*;
use crate::ns::{NS_OVF1, NS_OVF2, NS_XML};
use crate::xml::{self, XmlAttr, XmlElement, XmlNode};

/// Serialises an envelope as OVF `version` (1.x or 2.0; a 0.9 request writes 1.x, the
/// oldest standard form).
pub fn write(env: &Envelope, version: OvfVersion) -> String {
    let ns = match version {
        OvfVersion::V2 => NS_OVF2,
        OvfVersion::V1 | OvfVersion::V0_9 => NS_OVF1,
    };
    let w = Writer { ns };
    xml::write_document(&w.envelope(env, version))
}

struct Writer {
    ns: &'static str,
}

impl Writer {
    fn el(&self, local: &str) -> XmlElement {
        XmlElement::new(Some(self.ns), local)
    }

    fn text_el(&self, local: &str, text: &str) -> XmlElement {
        XmlElement::with_text(Some(self.ns), local, text)
    }

    fn set(&self, e: &mut XmlElement, local: &str, value: impl Into<String>) {
        e.attrs.push(XmlAttr::new(Some(self.ns), local, value));
    }

    fn set_opt(&self, e: &mut XmlElement, local: &str, value: Option<impl ToString>) {
        if let Some(v) = value {
            self.set(e, local, v.to_string());
        }
    }

    fn required(&self, e: &mut XmlElement, required: bool) {
        if !required {
            self.set(e, "required", "false");
        }
    }

    fn info(&self, e: &mut XmlElement, info: &str) {
        e.push(self.text_el("Info", info));
    }

    fn extend(&self, e: &mut XmlElement, extra: &Extensions) {
        e.attrs.extend(extra.attrs.iter().cloned());
        e.children
            .extend(extra.elements.iter().cloned().map(XmlNode::Element));
    }

    fn envelope(&self, env: &Envelope, version: OvfVersion) -> XmlElement {
        let mut e = self.el("Envelope");
        self.set(
            &mut e,
            "version",
            if version == OvfVersion::V2 {
                "2.0"
            } else {
                "1.1"
            },
        );
        if let Some(lang) = &env.lang {
            e.attrs
                .push(XmlAttr::new(Some(NS_XML), "lang", lang.clone()));
        }
        let mut refs = self.el("References");
        for f in &env.references {
            let mut fe = self.el("File");
            self.set(&mut fe, "id", f.id.clone());
            self.set(&mut fe, "href", f.href.clone());
            self.set_opt(&mut fe, "size", f.size);
            self.set_opt(&mut fe, "compression", f.compression.as_ref());
            self.set_opt(&mut fe, "chunkSize", f.chunk_size);
            fe.attrs.extend(f.extra_attrs.iter().cloned());
            refs.push(fe);
        }
        e.push(refs);
        if let Some(ds) = &env.disk_section {
            let mut s = self.el("DiskSection");
            self.required(&mut s, ds.required);
            self.info(&mut s, &ds.info);
            for d in &ds.disks {
                let mut de = self.el("Disk");
                self.set(&mut de, "diskId", d.disk_id.clone());
                self.set_opt(&mut de, "fileRef", d.file_ref.as_ref());
                let cap = match &d.capacity {
                    Capacity::Value(v) => v.to_string(),
                    Capacity::Property(p) => format!("${{{p}}}"),
                };
                self.set(&mut de, "capacity", cap);
                self.set_opt(
                    &mut de,
                    "capacityAllocationUnits",
                    d.capacity_units.as_ref(),
                );
                self.set_opt(&mut de, "populatedSize", d.populated_size);
                self.set_opt(&mut de, "format", d.format.as_ref());
                self.set_opt(&mut de, "parentRef", d.parent_ref.as_ref());
                de.attrs.extend(d.extra_attrs.iter().cloned());
                s.push(de);
            }
            self.extend(&mut s, &ds.extra);
            e.push(s);
        }
        if let Some(ns) = &env.network_section {
            let mut s = self.el("NetworkSection");
            self.required(&mut s, ns.required);
            self.info(&mut s, &ns.info);
            for n in &ns.networks {
                let mut ne = self.el("Network");
                self.set(&mut ne, "name", n.name.clone());
                if let Some(d) = &n.description {
                    ne.push(self.text_el("Description", d));
                }
                self.extend(&mut ne, &n.extra);
                s.push(ne);
            }
            self.extend(&mut s, &ns.extra);
            e.push(s);
        }
        if let Some(dop) = &env.deployment_options {
            let mut s = self.el("DeploymentOptionSection");
            self.required(&mut s, dop.required);
            self.info(&mut s, &dop.info);
            for c in &dop.configurations {
                let mut ce = self.el("Configuration");
                self.set(&mut ce, "id", c.id.clone());
                if c.default {
                    self.set(&mut ce, "default", "true");
                }
                ce.push(self.text_el("Label", &c.label));
                ce.push(self.text_el("Description", &c.description));
                self.extend(&mut ce, &c.extra);
                s.push(ce);
            }
            self.extend(&mut s, &dop.extra);
            e.push(s);
        }
        self.extend(&mut e, &env.extra);
        e.push(self.content(&env.content));
        e
    }

    fn content(&self, c: &Content) -> XmlElement {
        match c {
            Content::System(s) => self.system(s),
            Content::Collection(col) => {
                let mut e = self.el("VirtualSystemCollection");
                self.set(&mut e, "id", col.id.clone());
                self.info(&mut e, &col.info);
                if let Some(n) = &col.name {
                    e.push(self.text_el("Name", n));
                }
                if let Some(st) = &col.startup {
                    e.push(self.startup(st));
                }
                for p in &col.products {
                    e.push(self.product(p));
                }
                for eu in &col.eulas {
                    e.push(self.eula(eu));
                }
                if let Some(a) = &col.annotation {
                    e.push(self.annotation(a));
                }
                if let Some(ra) = &col.resource_allocation {
                    let mut s = self.el("ResourceAllocationSection");
                    self.required(&mut s, ra.required);
                    self.info(&mut s, &ra.info);
                    for it in &ra.items {
                        s.push(self.item(it));
                    }
                    self.extend(&mut s, &ra.extra);
                    e.push(s);
                }
                self.extend(&mut e, &col.extra);
                for m in &col.members {
                    e.push(self.content(m));
                }
                e
            }
        }
    }

    fn system(&self, s: &VirtualSystem) -> XmlElement {
        let mut e = self.el("VirtualSystem");
        self.set(&mut e, "id", s.id.clone());
        self.info(&mut e, &s.info);
        if let Some(n) = &s.name {
            e.push(self.text_el("Name", n));
        }
        if let Some(os) = &s.operating_system {
            let mut o = self.el("OperatingSystemSection");
            self.required(&mut o, os.required);
            self.set_opt(&mut o, "id", os.id.as_ref());
            self.set_opt(&mut o, "version", os.version.as_ref());
            self.info(&mut o, &os.info);
            if let Some(d) = &os.description {
                o.push(self.text_el("Description", d));
            }
            self.extend(&mut o, &os.extra);
            e.push(o);
        }
        for p in &s.products {
            e.push(self.product(p));
        }
        for eu in &s.eulas {
            e.push(self.eula(eu));
        }
        if let Some(a) = &s.annotation {
            e.push(self.annotation(a));
        }
        if let Some(i) = &s.install {
            let mut ie = self.el("InstallSection");
            self.required(&mut ie, i.required);
            self.set_opt(&mut ie, "initialBootStopDelay", i.initial_boot_stop_delay);
            self.info(&mut ie, &i.info);
            self.extend(&mut ie, &i.extra);
            e.push(ie);
        }
        for hw in &s.hardware {
            e.push(self.hardware(hw));
        }
        self.extend(&mut e, &s.extra);
        e
    }

    fn hardware(&self, hw: &VirtualHardwareSection) -> XmlElement {
        let mut e = self.el("VirtualHardwareSection");
        self.required(&mut e, hw.required);
        self.set_opt(&mut e, "id", hw.id.as_ref());
        self.set_opt(&mut e, "transport", hw.transport.as_ref());
        self.info(&mut e, &hw.info);
        if let Some(sys) = &hw.system {
            let mut se = self.el("System");
            for p in &sys.properties {
                se.push(cim(p));
            }
            self.extend(&mut se, &sys.extra);
            e.push(se);
        }
        for it in &hw.items {
            e.push(self.item(it));
        }
        self.extend(&mut e, &hw.extra);
        e
    }

    fn item(&self, it: &Item) -> XmlElement {
        // OVF 1.x has no StorageItem/EthernetPortItem: those are written in the OVF 2
        // namespace, as 1.x envelopes embedding 2.x sections do.
        let ns = match (it.kind, self.ns) {
            (ItemKind::Item, ns) => ns,
            (_, _) => NS_OVF2,
        };
        let mut e = XmlElement::new(Some(ns), it.kind.element_name());
        self.required(&mut e, it.required);
        self.set_opt(&mut e, "configuration", it.configuration.as_ref());
        self.set_opt(&mut e, "bound", it.bound.as_ref());
        for p in &it.properties {
            e.push(cim(p));
        }
        self.extend(&mut e, &it.extra);
        e
    }

    fn product(&self, p: &ProductSection) -> XmlElement {
        let mut e = self.el("ProductSection");
        self.required(&mut e, p.required);
        self.set_opt(&mut e, "class", p.class.as_ref());
        self.set_opt(&mut e, "instance", p.instance.as_ref());
        self.info(&mut e, &p.info);
        for (name, v) in [
            ("Product", &p.product),
            ("Vendor", &p.vendor),
            ("Version", &p.version),
            ("FullVersion", &p.full_version),
            ("ProductUrl", &p.product_url),
            ("VendorUrl", &p.vendor_url),
            ("AppUrl", &p.app_url),
        ] {
            if let Some(v) = v {
                e.push(self.text_el(name, v));
            }
        }
        self.extend(&mut e, &p.extra);
        for entry in &p.entries {
            match entry {
                ProductEntry::Category(c) => e.push(self.text_el("Category", c)),
                ProductEntry::Property(prop) => {
                    let mut pe = self.el("Property");
                    self.set(&mut pe, "key", prop.key.clone());
                    self.set(&mut pe, "type", prop.type_.clone());
                    self.set_opt(&mut pe, "qualifiers", prop.qualifiers.as_ref());
                    self.set_opt(&mut pe, "userConfigurable", prop.user_configurable);
                    self.set_opt(&mut pe, "value", prop.default.as_ref());
                    self.set_opt(&mut pe, "password", prop.password);
                    if let Some(l) = &prop.label {
                        pe.push(self.text_el("Label", l));
                    }
                    if let Some(d) = &prop.description {
                        pe.push(self.text_el("Description", d));
                    }
                    for v in &prop.values {
                        let mut ve = self.el("Value");
                        self.set(&mut ve, "value", v.value.clone());
                        self.set_opt(&mut ve, "configuration", v.configuration.as_ref());
                        pe.push(ve);
                    }
                    self.extend(&mut pe, &prop.extra);
                    e.push(pe);
                }
            }
        }
        e
    }

    fn eula(&self, s: &EulaSection) -> XmlElement {
        let mut e = self.el("EulaSection");
        self.required(&mut e, s.required);
        self.info(&mut e, &s.info);
        e.push(self.text_el("License", &s.license));
        self.extend(&mut e, &s.extra);
        e
    }

    fn annotation(&self, s: &AnnotationSection) -> XmlElement {
        let mut e = self.el("AnnotationSection");
        self.required(&mut e, s.required);
        self.info(&mut e, &s.info);
        e.push(self.text_el("Annotation", &s.annotation));
        self.extend(&mut e, &s.extra);
        e
    }

    fn startup(&self, s: &StartupSection) -> XmlElement {
        let mut e = self.el("StartupSection");
        self.required(&mut e, s.required);
        self.info(&mut e, &s.info);
        for it in &s.items {
            let mut ie = self.el("Item");
            self.set(&mut ie, "id", it.id.clone());
            self.set_opt(&mut ie, "order", it.order);
            self.set_opt(&mut ie, "startDelay", it.start_delay);
            self.set_opt(&mut ie, "waitingForGuest", it.waiting_for_guest);
            self.set_opt(&mut ie, "stopDelay", it.stop_delay);
            self.set_opt(&mut ie, "startAction", it.start_action.as_ref());
            self.set_opt(&mut ie, "stopAction", it.stop_action.as_ref());
            ie.attrs.extend(it.extra_attrs.iter().cloned());
            e.push(ie);
        }
        self.extend(&mut e, &s.extra);
        e
    }
}

fn cim(p: &CimProperty) -> XmlElement {
    let ns = if p.ns.is_empty() {
        None
    } else {
        Some(p.ns.as_str())
    };
    let mut e = XmlElement::with_text(ns, &p.name, &p.value);
    e.attrs = p.attrs.clone();
    e
}
