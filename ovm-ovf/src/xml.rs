//! A small namespace-resolved XML tree, built safely from untrusted bytes with quick-xml,
//! and written back with generated prefixes.
//!
//! Safety rules enforced while reading:
//! - a `<!DOCTYPE>` is refused outright, so no entity can ever be declared;
//! - any entity reference other than the five predefined ones and character references is
//!   refused by name;
//! - nesting depth, element count and namespace bindings are bounded.
//!
//! Elements and attributes carry their namespace URI, never their prefix: everything
//! downstream matches on namespace + local name.

use std::collections::BTreeMap;

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{QName, ResolveResult};
use quick_xml::reader::NsReader;

use crate::error::{OvfError, Result};
use crate::ns::is_ovf_namespace;

// The namespaces live in `ns` (shared with the descriptor reader); `xml::NS_*` stays
// their public path.
pub use crate::ns::{
    NS_CIM, NS_CIM_PREFIX, NS_EPASD, NS_OVF_DMTF_DRAFT, NS_OVF_VMW_09, NS_OVF1, NS_OVF2, NS_OVIRT,
    NS_OVM, NS_RASD, NS_SASD, NS_VBOX, NS_VMW, NS_VSSD, NS_XML, NS_XSI, well_known_prefix,
};

/// A namespace-qualified name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QualName {
    /// Namespace URI; `None` for names in no namespace.
    pub ns: Option<String>,
    /// Local name.
    pub local: String,
}

impl QualName {
    /// A name in a namespace.
    pub fn new(ns: Option<&str>, local: &str) -> Self {
        QualName {
            ns: ns.map(str::to_owned),
            local: local.to_owned(),
        }
    }
}

impl std::fmt::Display for QualName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ns.as_deref() {
            None => f.write_str(&self.local),
            Some(ns) => {
                if let Some(p) = well_known_prefix(ns) {
                    write!(f, "{p}:{}", self.local)
                } else if is_ovf_namespace(ns) {
                    write!(f, "ovf:{}", self.local)
                } else if ns.starts_with(NS_CIM_PREFIX) {
                    write!(f, "rasd:{}", self.local)
                } else {
                    write!(f, "{{{ns}}}{}", self.local)
                }
            }
        }
    }
}

/// An attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlAttr {
    /// Its name (unprefixed attributes are in no namespace).
    pub name: QualName,
    /// Its value, unescaped.
    pub value: String,
}

impl XmlAttr {
    /// An attribute.
    pub fn new(ns: Option<&str>, local: &str, value: impl Into<String>) -> Self {
        XmlAttr {
            name: QualName::new(ns, local),
            value: value.into(),
        }
    }
}

/// A child of an element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmlNode {
    /// A child element.
    Element(XmlElement),
    /// Character data (whitespace-only runs between elements are dropped).
    Text(String),
}

/// An element with resolved names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlElement {
    /// Its name.
    pub name: QualName,
    /// Its attributes, in document order, without namespace declarations.
    pub attrs: Vec<XmlAttr>,
    /// Its children.
    pub children: Vec<XmlNode>,
    /// The resolved value of an `xsi:type` attribute (a QName in the document), if any.
    /// OVF 0.9 names sections this way (`<Section xsi:type="ovf:DiskSection_Type">`).
    pub xsi_type: Option<QualName>,
}

impl XmlElement {
    /// An empty element.
    pub fn new(ns: Option<&str>, local: &str) -> Self {
        XmlElement {
            name: QualName::new(ns, local),
            attrs: Vec::new(),
            children: Vec::new(),
            xsi_type: None,
        }
    }

    /// Child elements.
    pub fn elements(&self) -> impl Iterator<Item = &XmlElement> {
        self.children.iter().filter_map(|c| match c {
            XmlNode::Element(e) => Some(e),
            XmlNode::Text(_) => None,
        })
    }

    /// The concatenated text of this element's direct text children.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for c in &self.children {
            if let XmlNode::Text(t) = c {
                s.push_str(t);
            }
        }
        s
    }

    /// Adds an attribute (builder style).
    pub fn attr(mut self, ns: Option<&str>, local: &str, value: impl Into<String>) -> Self {
        self.attrs.push(XmlAttr::new(ns, local, value));
        self
    }

    /// Adds a child element.
    pub fn push(&mut self, child: XmlElement) {
        self.children.push(XmlNode::Element(child));
    }

    /// Adds a text child (nothing for an empty string).
    pub fn push_text(&mut self, text: &str) {
        if !text.is_empty() {
            self.children.push(XmlNode::Text(text.to_owned()));
        }
    }

    /// An element holding only text.
    pub fn with_text(ns: Option<&str>, local: &str, text: &str) -> Self {
        let mut e = XmlElement::new(ns, local);
        e.push_text(text);
        e
    }
}

/// Bounds applied while building the tree.
#[derive(Debug, Clone, Copy)]
pub struct XmlLimits {
    /// Deepest element nesting accepted.
    pub max_depth: usize,
    /// Most elements accepted.
    pub max_elements: usize,
}

impl Default for XmlLimits {
    fn default() -> Self {
        XmlLimits {
            max_depth: 128,
            max_elements: 500_000,
        }
    }
}

fn xml_err(reader: &NsReader<&[u8]>, e: impl std::fmt::Display) -> OvfError {
    OvfError::Xml {
        position: reader.buffer_position(),
        reason: e.to_string(),
    }
}

/// Maps quick-xml errors, naming refused entities precisely.
fn map_qx_error(reader: &NsReader<&[u8]>, e: quick_xml::Error) -> OvfError {
    if let quick_xml::Error::Escape(quick_xml::escape::EscapeError::UnrecognizedEntity(_, name)) =
        &e
    {
        return OvfError::EntityRefused {
            entity: name.clone(),
        };
    }
    xml_err(reader, e)
}

fn resolved_ns(r: ResolveResult<'_>, what: &str) -> Result<Option<String>> {
    match r {
        ResolveResult::Bound(ns) => Ok(Some(ns.as_ref().to_owned())),
        ResolveResult::Unbound => Ok(None),
        ResolveResult::Unknown(p) => Err(OvfError::Xml {
            position: 0,
            reason: format!("{what} uses undeclared namespace prefix {p:?}"),
        }),
    }
}

/// Parses a whole document into a tree. The input must be UTF-8 (a BOM is skipped).
pub fn parse_document(bytes: &[u8], limits: XmlLimits) -> Result<XmlElement> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF") {
        return Err(OvfError::NotUtf8 {
            reason: "UTF-16 byte order mark".into(),
        });
    }
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(OvfError::NotUtf8 {
            reason: format!("invalid byte at offset {}", e.valid_up_to()),
        });
    }
    let mut reader = NsReader::from_reader(bytes);
    reader.resolver_mut().set_max_namespace_bindings(4096);
    {
        let cfg = reader.config_mut();
        cfg.check_end_names = true;
        cfg.expand_empty_elements = false;
    }
    let mut stack: Vec<XmlElement> = Vec::new();
    let mut root: Option<XmlElement> = None;
    let mut elements = 0usize;
    loop {
        let event = reader.read_event().map_err(|e| map_qx_error(&reader, e))?;
        match event {
            Event::DocType(_) => return Err(OvfError::DoctypeRefused),
            Event::Start(ref start) | Event::Empty(ref start) => {
                let is_empty = matches!(event, Event::Empty(_));
                elements += 1;
                if elements > limits.max_elements {
                    return Err(OvfError::LimitExceeded {
                        what: "XML element count".into(),
                        limit: limits.max_elements as u64,
                    });
                }
                if stack.len() >= limits.max_depth {
                    return Err(OvfError::LimitExceeded {
                        what: "XML nesting depth".into(),
                        limit: limits.max_depth as u64,
                    });
                }
                if root.is_some() {
                    return Err(xml_err(&reader, "content after the root element"));
                }
                let element = build_element(&reader, start)?;
                if is_empty {
                    attach(&mut stack, &mut root, element);
                } else {
                    stack.push(element);
                }
            }
            Event::End(_) => {
                let Some(done) = stack.pop() else {
                    return Err(xml_err(&reader, "unmatched end tag"));
                };
                attach(&mut stack, &mut root, done);
            }
            Event::Text(t) => {
                let text = t.xml10_content();
                push_text(&reader, &mut stack, &text)?;
            }
            Event::CData(c) => {
                let text = c.xml10_content();
                push_text(&reader, &mut stack, &text)?;
            }
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => match r.as_ref() {
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "amp" => "&".into(),
                        "apos" => "'".into(),
                        "quot" => "\"".into(),
                        other => {
                            return Err(OvfError::EntityRefused {
                                entity: other.to_owned(),
                            });
                        }
                    },
                    Err(e) => return Err(xml_err(&reader, e)),
                };
                push_text(&reader, &mut stack, &c)?;
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(xml_err(&reader, "document ends inside an element"));
    }
    let mut root = root.ok_or_else(|| xml_err(&reader, "no root element"))?;
    normalise_text(&mut root);
    Ok(root)
}

fn push_text(reader: &NsReader<&[u8]>, stack: &mut [XmlElement], text: &str) -> Result<()> {
    match stack.last_mut() {
        Some(top) => {
            // Merge adjacent runs (text split by references).
            if let Some(XmlNode::Text(prev)) = top.children.last_mut() {
                prev.push_str(text);
            } else {
                top.children.push(XmlNode::Text(text.to_owned()));
            }
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err(xml_err(reader, "text outside the root element")),
    }
}

/// Drops whitespace-only text runs (indentation) everywhere.
fn normalise_text(e: &mut XmlElement) {
    e.children.retain(|c| match c {
        XmlNode::Text(t) => !t.trim().is_empty(),
        XmlNode::Element(_) => true,
    });
    for c in &mut e.children {
        if let XmlNode::Element(child) = c {
            normalise_text(child);
        }
    }
}

fn attach(stack: &mut [XmlElement], root: &mut Option<XmlElement>, e: XmlElement) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(XmlNode::Element(e)),
        None => *root = Some(e),
    }
}

fn build_element(reader: &NsReader<&[u8]>, start: &BytesStart<'_>) -> Result<XmlElement> {
    let (ns, local) = reader.resolver().resolve_element(start.name());
    let ns = resolved_ns(ns, &format!("element {}", start.name().as_ref()))?;
    let mut element = XmlElement::new(ns.as_deref(), local.as_ref());
    for attr in start.attributes() {
        let attr = attr.map_err(|e| xml_err(reader, e))?;
        let key = attr.key;
        if key.as_ref() == "xmlns" || key.as_ref().starts_with("xmlns:") {
            continue;
        }
        let (ans, alocal) = reader.resolver().resolve_attribute(key);
        let ans = if key.as_ref().starts_with("xml:") {
            Some(NS_XML.to_owned())
        } else {
            resolved_ns(ans, &format!("attribute {}", key.as_ref()))?
        };
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| map_qx_error(reader, e))?
            .into_owned();
        if ans.as_deref() == Some(NS_XSI) && alocal.as_ref() == "type" {
            let (tns, tlocal) = reader.resolver().resolve_element(QName(value.trim()));
            if let Ok(tns) = resolved_ns(tns, "xsi:type value") {
                element.xsi_type = Some(QualName {
                    ns: tns,
                    local: tlocal.as_ref().to_owned(),
                });
            }
        }
        element.attrs.push(XmlAttr {
            name: QualName {
                ns: ans,
                local: alocal.as_ref().to_owned(),
            },
            value,
        });
    }
    Ok(element)
}

/// Escapes text for element content or attribute values.
pub fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push('\n'),
            c => out.push(c),
        }
    }
}

fn escape_attr(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\n' => out.push_str("&#10;"),
            c => escape(c.encode_utf8(&mut [0; 4]), out),
        }
    }
}

fn collect_namespaces(e: &XmlElement, set: &mut std::collections::BTreeSet<String>) {
    if let Some(ns) = &e.name.ns {
        set.insert(ns.clone());
    }
    for a in &e.attrs {
        if let Some(ns) = &a.name.ns
            && ns != NS_XML
        {
            set.insert(ns.clone());
        }
    }
    for c in e.elements() {
        collect_namespaces(c, set);
    }
}

/// Serialises a tree as a UTF-8 document. Every namespace used is declared on the root
/// with a conventional prefix (`ovf`, `rasd`, `vmw`, ...) or a generated one (`ns1`, ...);
/// no default namespace is used, so elements in no namespace need no redeclaration.
pub fn write_document(root: &XmlElement) -> String {
    let mut namespaces = std::collections::BTreeSet::new();
    collect_namespaces(root, &mut namespaces);
    let mut prefixes: BTreeMap<String, String> = BTreeMap::new();
    let mut used: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for ns in &namespaces {
        if let Some(p) = well_known_prefix(ns) {
            prefixes.insert(ns.clone(), p.to_owned());
            used.insert(p.to_owned());
        }
    }
    let mut n = 1;
    for ns in &namespaces {
        if !prefixes.contains_key(ns) {
            while used.contains(&format!("ns{n}")) {
                n += 1;
            }
            prefixes.insert(ns.clone(), format!("ns{n}"));
            used.insert(format!("ns{n}"));
        }
    }
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    write_element(root, &prefixes, 0, true, &mut out);
    out.push('\n');
    out
}

fn qname(name: &QualName, prefixes: &BTreeMap<String, String>, out: &mut String) {
    match name.ns.as_deref() {
        None => {}
        Some(NS_XML) => out.push_str("xml:"),
        Some(ns) => {
            if let Some(p) = prefixes.get(ns) {
                out.push_str(p);
                out.push(':');
            }
        }
    }
    out.push_str(&name.local);
}

fn write_element(
    e: &XmlElement,
    prefixes: &BTreeMap<String, String>,
    depth: usize,
    is_root: bool,
    out: &mut String,
) {
    out.push('<');
    qname(&e.name, prefixes, out);
    if is_root {
        for (ns, p) in prefixes {
            out.push_str(" xmlns:");
            out.push_str(p);
            out.push_str("=\"");
            escape_attr(ns, out);
            out.push('"');
        }
    }
    for a in &e.attrs {
        out.push(' ');
        qname(&a.name, prefixes, out);
        out.push_str("=\"");
        escape_attr(&a.value, out);
        out.push('"');
    }
    if e.children.is_empty() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    let inline = e.children.iter().any(|c| matches!(c, XmlNode::Text(_)));
    for c in &e.children {
        match c {
            XmlNode::Text(t) => escape(t, out),
            XmlNode::Element(child) => {
                if !inline {
                    out.push('\n');
                    out.push_str(&"  ".repeat(depth + 1));
                }
                write_element(child, prefixes, depth + 1, false, out);
            }
        }
    }
    if !inline {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    }
    out.push_str("</");
    qname(&e.name, prefixes, out);
    out.push('>');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doctype_and_entities_are_refused() {
        let xxe = br#"<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>"#;
        assert!(matches!(
            parse_document(xxe, XmlLimits::default()),
            Err(OvfError::DoctypeRefused)
        ));
        let undeclared = b"<a>&x;</a>";
        assert!(matches!(
            parse_document(undeclared, XmlLimits::default()),
            Err(OvfError::EntityRefused { entity }) if entity == "x"
        ));
        let in_attr = b"<a b=\"&y;\"/>";
        assert!(matches!(
            parse_document(in_attr, XmlLimits::default()),
            Err(OvfError::EntityRefused { entity }) if entity == "y"
        ));
        let ok = parse_document(b"<a>&lt;&#65;&amp;</a>", XmlLimits::default()).unwrap();
        assert_eq!(ok.text(), "<A&");
    }

    #[test]
    fn depth_is_bounded() {
        let deep = "<a>".repeat(1000) + &"</a>".repeat(1000);
        assert!(matches!(
            parse_document(deep.as_bytes(), XmlLimits::default()),
            Err(OvfError::LimitExceeded { .. })
        ));
    }

    #[test]
    fn names_resolve_by_namespace_not_prefix() {
        let doc = br#"<x:E xmlns:x="urn:a" xmlns:t="http://www.w3.org/2001/XMLSchema-instance" t:type="x:Foo_Type" x:id="1" plain="2"><y:C xmlns:y="urn:a"/></x:E>"#;
        let e = parse_document(doc, XmlLimits::default()).unwrap();
        assert_eq!(e.name, QualName::new(Some("urn:a"), "E"));
        assert_eq!(e.xsi_type, Some(QualName::new(Some("urn:a"), "Foo_Type")));
        assert_eq!(e.attrs[1].name, QualName::new(Some("urn:a"), "id"));
        assert_eq!(e.attrs[2].name, QualName::new(None, "plain"));
        assert_eq!(
            e.elements().next().unwrap().name.ns.as_deref(),
            Some("urn:a")
        );
    }

    #[test]
    fn write_then_parse_is_identity() {
        let mut root = XmlElement::new(Some("urn:a"), "Root").attr(Some("urn:b"), "k", "v\"<\n");
        let mut child = XmlElement::with_text(None, "Plain", " text & more ");
        child.push(XmlElement::new(Some("urn:a"), "Inner"));
        child.push_text("tail");
        root.push(child);
        root.push(XmlElement::new(Some(NS_VMW), "Config").attr(Some(NS_VMW), "key", "x"));
        let text = write_document(&root);
        let back = parse_document(text.as_bytes(), XmlLimits::default()).unwrap();
        assert_eq!(back, root);
    }
}
