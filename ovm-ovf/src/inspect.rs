//! The summary behind `ovm ovf inspect PATH [--json]`.

use std::path::Path;

use serde_json::{Value, json};

use crate::error::Result;
use crate::limits::Limits;
use crate::mapping::map_system;
use crate::model::{Content, Envelope};
use crate::ova::read_package_head;

/// Summarises an `.ovf` (with its files beside it) or an `.ova`: reads the descriptor,
/// manifest and certificate only, never the disks.
///
/// Fields: `ovf_version`, `virtual_systems` (each `id`, `name`, `cpus`, `memory_mib`,
/// `domain_type`, `disks` (each `id`, `capacity_bytes`, `format`, `file`), `nics` (each
/// `network`, `mac`), `not_honoured`), `is_collection`, `networks`, `properties`,
/// `signed`, `has_manifest`, `warnings`.
pub fn summary_json(path: &Path, limits: &Limits) -> Result<Value> {
    let pkg = read_package_head(path, limits)?;
    let mut warnings = pkg.parsed.warnings.clone();
    warnings.extend(pkg.warnings.iter().cloned());
    let mut v = envelope_summary(&pkg.parsed.envelope, limits, &mut warnings)?;
    v["signed"] = json!(pkg.certificate.is_some());
    v["has_manifest"] = json!(pkg.manifest.is_some());
    v["warnings"] = json!(warnings);
    Ok(v)
}

/// Summarises a parsed envelope (see [`summary_json`]); mapping notes are appended to
/// `warnings`.
pub fn envelope_summary(
    env: &Envelope,
    limits: &Limits,
    warnings: &mut Vec<String>,
) -> Result<Value> {
    let mut systems = Vec::new();
    for vs in env.content.systems() {
        let m = map_system(env, vs, None, limits)?;
        for n in &m.not_honoured {
            if n.required && n.unknown {
                warnings.push(format!(
                    "VirtualSystem {}: required {} cannot be honoured ({}); import will fail",
                    vs.id, n.item, n.reason
                ));
            }
        }
        systems.push(json!({
            "id": vs.id,
            "name": vs.name.clone().unwrap_or_else(|| vs.id.clone()),
            "cpus": m.spec.vcpus,
            "memory_mib": m.spec.memory_mib,
            "domain_type": m.spec.domain_type.as_str(),
            "os": vs.operating_system.as_ref().and_then(|o| o.description.clone()),
            "disks": m.disks.iter().map(|d| json!({
                "id": d.disk_id,
                "capacity_bytes": d.capacity_bytes,
                "format": d.format,
                "file": d.href,
            })).collect::<Vec<_>>(),
            "nics": m.nics.iter().map(|n| json!({"network": n.network, "mac": n.mac})).collect::<Vec<_>>(),
            "not_honoured": m.not_honoured.iter().map(|n| json!({
                "item": n.item, "reason": n.reason, "required": n.required,
            })).collect::<Vec<_>>(),
        }));
    }
    let networks: Vec<String> = env
        .network_section
        .iter()
        .flat_map(|s| s.networks.iter().map(|n| n.name.clone()))
        .collect();
    let properties: Vec<Value> = env
        .all_properties()
        .into_iter()
        .map(|p| {
            json!({
                "key": p.key,
                "type": p.type_,
                "default": if p.password == Some(true) { None } else { p.default.clone() },
                "label": p.label,
                "user_configurable": p.user_configurable.unwrap_or(false),
                "password": p.password.unwrap_or(false),
            })
        })
        .collect();
    Ok(json!({
        "ovf_version": env.version.as_str(),
        "virtual_systems": systems,
        "is_collection": matches!(env.content, Content::Collection(_)),
        "networks": networks,
        "properties": properties,
        "warnings": warnings.clone(),
    }))
}

/// A human-readable rendering of a summary, for `ovm ovf inspect` without `--json`.
pub fn render_text(v: &Value) -> String {
    let mut s = String::new();
    s.push_str(&format!("OVF {}", v["ovf_version"].as_str().unwrap_or("?")));
    if v["is_collection"].as_bool() == Some(true) {
        s.push_str(", collection");
    }
    s.push('\n');
    for vs in v["virtual_systems"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "VM {} ({}): {} vCPU, {} MiB, {}\n",
            vs["name"].as_str().unwrap_or("?"),
            vs["id"].as_str().unwrap_or("?"),
            vs["cpus"],
            vs["memory_mib"],
            vs["domain_type"].as_str().unwrap_or("?"),
        ));
        for d in vs["disks"].as_array().into_iter().flatten() {
            s.push_str(&format!(
                "  disk {}: {} bytes, {}, file {}\n",
                d["id"].as_str().unwrap_or("?"),
                d["capacity_bytes"],
                d["format"].as_str().unwrap_or("-"),
                d["file"].as_str().unwrap_or("(blank)"),
            ));
        }
        for n in vs["nics"].as_array().into_iter().flatten() {
            s.push_str(&format!(
                "  nic on {}\n",
                n["network"].as_str().unwrap_or("?")
            ));
        }
        for n in vs["not_honoured"].as_array().into_iter().flatten() {
            s.push_str(&format!(
                "  not honoured: {}: {}\n",
                n["item"].as_str().unwrap_or("?"),
                n["reason"].as_str().unwrap_or("?")
            ));
        }
    }
    for p in v["properties"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "property {} ({})\n",
            p["key"].as_str().unwrap_or("?"),
            p["type"].as_str().unwrap_or("?")
        ));
    }
    for w in v["warnings"].as_array().into_iter().flatten() {
        s.push_str(&format!("warning: {}\n", w.as_str().unwrap_or("?")));
    }
    s
}
