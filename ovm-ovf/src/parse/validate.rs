//! The checks [`super::parse`] adds to reading: ids are unique, references resolve, and
//! declared sizes stay within [`Limits`]. Dangling names that do not stop an import
//! (networks, deployment configurations, startup members, capacity properties) are
//! warnings.

use std::collections::BTreeSet;

use crate::error::{OvfError, Result};
use crate::limits::Limits;
use crate::model::{Capacity, Content, Envelope, Item, ResourceKind, VirtualDisk};
use crate::units::{bytes_per_unit, parse_size};

use super::hardware::host_resource;
use super::href::check_href;

/// Checks references, hrefs and declared sizes.
pub fn validate(env: &Envelope, limits: &Limits, warnings: &mut Vec<String>) -> Result<()> {
    validate_files(env, limits)?;
    validate_disks(env, limits, warnings)?;
    let networks: BTreeSet<&str> = env
        .network_section
        .iter()
        .flat_map(|s| s.networks.iter().map(|n| n.name.as_str()))
        .collect();
    let configs: BTreeSet<&str> = env
        .deployment_options
        .iter()
        .flat_map(|s| s.configurations.iter().map(|c| c.id.as_str()))
        .collect();
    let mut system_ids = BTreeSet::new();
    validate_content(
        env,
        &env.content,
        &networks,
        &configs,
        &mut system_ids,
        warnings,
    )
}

/// File ids are unique; sizes, chunk sizes, compression and hrefs are acceptable.
fn validate_files(env: &Envelope, limits: &Limits) -> Result<()> {
    let mut ids = BTreeSet::new();
    for f in &env.references {
        if !ids.insert(f.id.as_str()) {
            return Err(OvfError::Duplicate {
                what: "File id".into(),
                id: f.id.clone(),
            });
        }
        if let Some(size) = f.size
            && size > limits.max_file_bytes
        {
            return Err(OvfError::size(
                format!("File {} ovf:size", f.id),
                size.to_string(),
                format!("exceeds the limit of {} bytes", limits.max_file_bytes),
            ));
        }
        if let Some(chunk) = f.chunk_size {
            if chunk == 0 {
                return Err(OvfError::size(
                    format!("File {} ovf:chunkSize", f.id),
                    "0",
                    "zero",
                ));
            }
            if chunk > limits.max_file_bytes {
                return Err(OvfError::size(
                    format!("File {} ovf:chunkSize", f.id),
                    chunk.to_string(),
                    format!("exceeds the limit of {} bytes", limits.max_file_bytes),
                ));
            }
        }
        if let Some(c) = &f.compression
            && !matches!(c.trim(), "gzip" | "identity")
        {
            return Err(OvfError::value(
                format!("File {} ovf:compression", f.id),
                c,
                "only gzip and identity are defined",
            ));
        }
        check_href(&f.href, limits.href)?;
    }
    Ok(())
}

/// Disk ids are unique, their files and parents exist and their sizes are within limits.
/// A capacity property that is missing or has no default is only a warning: a deployment
/// may still set it.
fn validate_disks(env: &Envelope, limits: &Limits, warnings: &mut Vec<String>) -> Result<()> {
    let mut disk_ids = BTreeSet::new();
    if let Some(ds) = &env.disk_section {
        for d in &ds.disks {
            if !disk_ids.insert(d.disk_id.as_str()) {
                return Err(OvfError::Duplicate {
                    what: "Disk diskId".into(),
                    id: d.disk_id.clone(),
                });
            }
            if let Some(r) = &d.file_ref
                && env.file(r).is_none()
            {
                return Err(OvfError::DanglingReference {
                    what: format!("Disk {} ovf:fileRef", d.disk_id),
                    target: "File".into(),
                    id: r.clone(),
                });
            }
            match disk_capacity_bytes(env, d, limits) {
                Ok(_) => {}
                Err(OvfError::DanglingReference { id, .. }) => warnings.push(format!(
                    "Disk {} capacity refers to property {id}, which no ProductSection defines",
                    d.disk_id
                )),
                Err(OvfError::Missing { context, .. }) => {
                    warnings.push(format!("{context} has no default value"))
                }
                Err(e) => return Err(e),
            }
            if let Some(p) = d.populated_size
                && p > limits.max_disk_bytes
            {
                return Err(OvfError::size(
                    format!("Disk {} ovf:populatedSize", d.disk_id),
                    p.to_string(),
                    format!("exceeds the limit of {} bytes", limits.max_disk_bytes),
                ));
            }
        }
        for d in &ds.disks {
            if let Some(p) = &d.parent_ref
                && !disk_ids.contains(p.as_str())
            {
                return Err(OvfError::DanglingReference {
                    what: format!("Disk {} ovf:parentRef", d.disk_id),
                    target: "Disk".into(),
                    id: p.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Item references and system ids, through nested collections.
fn validate_content<'a>(
    env: &Envelope,
    content: &'a Content,
    networks: &BTreeSet<&str>,
    configs: &BTreeSet<&str>,
    system_ids: &mut BTreeSet<&'a str>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    if !content.id().is_empty() && !system_ids.insert(content.id()) {
        return Err(OvfError::Duplicate {
            what: "VirtualSystem id".into(),
            id: content.id().to_owned(),
        });
    }
    match content {
        Content::System(s) => {
            for hw in &s.hardware {
                for item in &hw.items {
                    validate_item(env, &s.id, item, networks, configs, warnings)?;
                }
            }
        }
        Content::Collection(c) => {
            for m in &c.members {
                validate_content(env, m, networks, configs, system_ids, warnings)?;
            }
            if let Some(st) = &c.startup {
                for it in &st.items {
                    if !c.members.iter().any(|m| m.id() == it.id) {
                        warnings.push(format!(
                            "StartupSection of {} names {:?}, which is not a member",
                            c.id, it.id
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// An item's `HostResource` must name a declared disk or file; its network connections
/// and deployment configurations should be declared.
fn validate_item(
    env: &Envelope,
    system_id: &str,
    item: &Item,
    networks: &BTreeSet<&str>,
    configs: &BTreeSet<&str>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let ctx = format!("VirtualSystem {system_id} item {}", item.label());
    for hr in item.get_all("HostResource") {
        match host_resource(hr) {
            Some(("disk", id)) if env.disk(id).is_none() => {
                return Err(OvfError::DanglingReference {
                    what: ctx,
                    target: "Disk".into(),
                    id: id.to_owned(),
                });
            }
            Some(("file", id)) if env.file(id).is_none() => {
                return Err(OvfError::DanglingReference {
                    what: ctx,
                    target: "File".into(),
                    id: id.to_owned(),
                });
            }
            _ => {}
        }
    }
    if item.resource_kind() == Some(ResourceKind::Ethernet) {
        for c in item.get_all("Connection") {
            if !c.is_empty() && !networks.contains(c) {
                warnings.push(format!(
                    "{ctx} connects to network {c:?}, which NetworkSection does not declare"
                ));
            }
        }
    }
    if let Some(list) = &item.configuration {
        for c in list.split_whitespace() {
            if !configs.contains(c) {
                warnings.push(format!(
                    "{ctx} names deployment configuration {c:?}, which is not declared"
                ));
            }
        }
    }
    Ok(())
}

/// Disk capacity in bytes, resolving `${property}` references with property defaults.
pub fn disk_capacity_bytes(env: &Envelope, disk: &VirtualDisk, limits: &Limits) -> Result<u64> {
    let what = format!("Disk {} ovf:capacity", disk.disk_id);
    let units = match &disk.capacity_units {
        Some(u) => bytes_per_unit(u).map_err(|_| {
            OvfError::value(
                format!("Disk {} ovf:capacityAllocationUnits", disk.disk_id),
                u,
                "not a byte unit",
            )
        })?,
        None => 1,
    };
    let (value, shown) = match &disk.capacity {
        Capacity::Value(v) => (*v, v.to_string()),
        Capacity::Property(key) => {
            let prop = env
                .all_properties()
                .into_iter()
                .find(|p| &p.key == key)
                .ok_or_else(|| OvfError::DanglingReference {
                    what: what.clone(),
                    target: "property".into(),
                    id: key.clone(),
                })?;
            let text = prop.default.clone().ok_or_else(|| OvfError::Missing {
                what: "ovf:value".into(),
                context: format!("Property {key} (used as {what})"),
            })?;
            (
                parse_size(&format!("{what} (property {key})"), &text)?,
                text,
            )
        }
    };
    let bytes = value
        .checked_mul(units)
        .ok_or_else(|| OvfError::size(&what, &shown, "overflows u64 bytes"))?;
    if bytes > limits.max_disk_bytes {
        return Err(OvfError::size(
            &what,
            &shown,
            format!(
                "{bytes} bytes exceeds the limit of {} bytes",
                limits.max_disk_bytes
            ),
        ));
    }
    Ok(bytes)
}
