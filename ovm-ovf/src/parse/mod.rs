//! Descriptor parsing: the safe XML tree → [`Envelope`], in every dialect found in real
//! files, then validation (references, sizes, hrefs).
//!
//! Dialects: VMware's pre-standard 0.9 (`<Section xsi:type="ovf:DiskSection_Type">`,
//! `<Content xsi:type="ovf:VirtualSystem_Type">`), early DMTF drafts, OVF 1.x (with or
//! without the trailing slash oVirt writes, and oVirt's unqualified elements), OVF 2.x,
//! and 1.x envelopes embedding 2.x sections. Elements are matched by namespace and local
//! name; attributes are accepted with the `ovf:` namespace or unqualified.
//!
//! `ovf:required` policy: an element ovm does not model fails parsing when it is marked
//! `ovf:required="true"`, or when it is a section (`...Section`) without the attribute
//! (the OVF default), unless it is a vendor section ovm recognises as safe to ignore
//! (e.g. `vmw:CpuCompatibilitySection`). Everything else is kept and reported as a
//! warning.
//!
//! One reader per section (`references`, `disks`, `networks`, `envelope` with its
//! deployment options, `systems`, `hardware` with `cim`, `product`, `sections`), sharing
//! `reader` and `attrs`; `validate` and `href` hold the checks [`parse`] adds.

mod attrs;
mod cim;
mod disks;
mod envelope;
mod hardware;
mod href;
mod networks;
mod product;
mod reader;
mod references;
mod sections;
mod systems;
mod validate;

pub use crate::ns::is_ovf_namespace;
pub use hardware::host_resource;
pub use href::check_href;
pub use validate::{disk_capacity_bytes, validate};

use crate::error::{OvfError, Result};
use crate::limits::Limits;
use crate::model::Envelope;
use crate::xml;
use reader::Cx;

/// A parsed descriptor and what could not be honoured or was odd about it.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The model.
    pub envelope: Envelope,
    /// Human-readable warnings (unknown optional elements, dangling network names, ...).
    pub warnings: Vec<String>,
}

/// Parses and validates a descriptor.
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Parsed> {
    let mut parsed = parse_unvalidated(bytes, limits)?;
    validate(&parsed.envelope, limits, &mut parsed.warnings)?;
    Ok(parsed)
}

/// Parses a descriptor without checking references, hrefs and size limits (what
/// [`parse`] adds). Syntax, entities, malformed sizes and unknown required elements are
/// still refused.
pub fn parse_unvalidated(bytes: &[u8], limits: &Limits) -> Result<Parsed> {
    if bytes.len() as u64 > limits.max_descriptor_bytes {
        return Err(OvfError::TooLarge {
            what: "descriptor".into(),
            size: bytes.len() as u64,
            limit: limits.max_descriptor_bytes,
        });
    }
    let root = xml::parse_document(bytes, limits.xml)?;
    let mut cx = Cx::default();
    let envelope = cx.envelope(&root)?;
    Ok(Parsed {
        envelope,
        warnings: cx.warnings,
    })
}
