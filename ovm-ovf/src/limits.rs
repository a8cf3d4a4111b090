//! Limits and policies applied to untrusted packages. Every one is configurable; the
//! defaults refuse what no genuine appliance needs.

use crate::xml::XmlLimits;

/// What kind of `ovf:href` values are accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HrefPolicy {
    /// Accept URLs (`http://...`, `file:...`). Such files are never fetched by ovm; the
    /// option only lets a descriptor that names them be read.
    pub allow_urls: bool,
    /// Accept absolute paths.
    pub allow_absolute: bool,
    /// Accept `..` components.
    pub allow_parent: bool,
}

/// What to do with a package certificate (`.cert`).
///
/// ovm recognises certificates and reports them, but does not verify X.509 signatures
/// (no audited pure-Rust verification is wired in yet). Integrity rests on the manifest
/// digests, which are always verified.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CertificatePolicy {
    /// Accept the package and report "signed, signature not verified" as a warning.
    #[default]
    Report,
    /// Refuse signed packages, since their signature cannot be checked.
    Refuse,
}

/// Limits for descriptors, manifests and archives.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest descriptor accepted (default 12 MiB).
    pub max_descriptor_bytes: u64,
    /// Largest manifest accepted (default 1 MiB).
    pub max_manifest_bytes: u64,
    /// Largest certificate accepted (default 1 MiB).
    pub max_certificate_bytes: u64,
    /// Largest file size a descriptor may declare (default 64 TiB).
    pub max_file_bytes: u64,
    /// Largest disk capacity a descriptor may declare (default 64 TiB, as volumes).
    pub max_disk_bytes: u64,
    /// Most entries in an OVA.
    pub max_archive_entries: u64,
    /// XML nesting and element limits.
    pub xml: XmlLimits,
    /// Accepted hrefs.
    pub href: HrefPolicy,
    /// Certificate handling.
    pub certificate: CertificatePolicy,
    /// Refuse packages without a manifest (default: accept, with a warning).
    pub require_manifest: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_descriptor_bytes: 12 << 20,
            max_manifest_bytes: 1 << 20,
            max_certificate_bytes: 1 << 20,
            max_file_bytes: ovm_core::VolumeSpec::MAX_SIZE,
            max_disk_bytes: ovm_core::VolumeSpec::MAX_SIZE,
            max_archive_entries: 10_000,
            xml: XmlLimits::default(),
            href: HrefPolicy::default(),
            certificate: CertificatePolicy::default(),
            require_manifest: false,
        }
    }
}
