//! Attribute and text readers: `ovf:` attributes are accepted qualified or not, and a
//! malformed value is refused with an error naming where it stands.

use crate::error::{OvfError, Result};
use crate::model::Extensions;
use crate::ns::{NS_XSI, is_ovf_namespace};
use crate::xml::{XmlAttr, XmlElement};

/// An attribute in an OVF namespace or in none.
pub(super) fn is_ovf_attr(a: &XmlAttr) -> bool {
    a.name.ns.as_deref().is_none_or(is_ovf_namespace)
}

/// An attribute in the OVF namespace or unqualified.
pub(super) fn attr<'a>(el: &'a XmlElement, local: &str) -> Option<&'a str> {
    el.attrs
        .iter()
        .filter(|a| a.name.local == local && is_ovf_attr(a))
        .min_by_key(|a| a.name.ns.is_none())
        .map(|a| a.value.as_str())
}

pub(super) fn required_attr<'a>(el: &'a XmlElement, local: &str, ctx: &str) -> Result<&'a str> {
    attr(el, local).ok_or_else(|| OvfError::Missing {
        what: format!("ovf:{local}"),
        context: ctx.to_owned(),
    })
}

/// Attributes other than the modelled ones (and namespace-only plumbing).
pub(super) fn extra_attrs(el: &XmlElement, known: &[&str]) -> Vec<XmlAttr> {
    el.attrs
        .iter()
        .filter(|a| {
            let modelled = is_ovf_attr(a) && known.contains(&a.name.local.as_str());
            let xsi_type = a.name.ns.as_deref() == Some(NS_XSI) && a.name.local == "type";
            !modelled && !xsi_type
        })
        .cloned()
        .collect()
}

fn parse_bool(what: &str, v: &str) -> Result<bool> {
    match v.trim() {
        "true" | "1" | "True" | "TRUE" => Ok(true),
        "false" | "0" | "False" | "FALSE" => Ok(false),
        _ => Err(OvfError::value(what, v, "expected true or false")),
    }
}

pub(super) fn opt_bool(el: &XmlElement, local: &str, ctx: &str) -> Result<Option<bool>> {
    attr(el, local)
        .map(|v| parse_bool(&format!("{ctx} ovf:{local}"), v))
        .transpose()
}

pub(super) fn opt_u32(el: &XmlElement, local: &str, ctx: &str) -> Result<Option<u32>> {
    attr(el, local)
        .map(|v| {
            v.trim().parse::<u32>().map_err(|_| {
                OvfError::value(
                    format!("{ctx} ovf:{local}"),
                    v,
                    "expected a non-negative integer",
                )
            })
        })
        .transpose()
}

/// `ovf:required`, which defaults to true.
pub(super) fn is_required(el: &XmlElement, ctx: &str) -> Result<bool> {
    Ok(opt_bool(el, "required", ctx)?.unwrap_or(true))
}

/// The trimmed text of an element.
pub(super) fn text(el: &XmlElement) -> String {
    el.text().trim().to_owned()
}

/// A section's extensions to start from: its attributes beyond `ovf:required`, and no
/// unknown child elements yet (the reader adds them as it meets them).
pub(super) fn section_extensions(el: &XmlElement) -> Extensions {
    Extensions {
        attrs: extra_attrs(el, &["required"]),
        elements: Vec::new(),
    }
}
