//! The one error type of ovm-ovf: each variant says what was refused and why.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = OvfError> = std::result::Result<T, E>;

/// Everything that can go wrong reading, checking, writing or importing OVF and OVA.
///
/// Variants name the object (element, file, entry, attribute) and the cause, so that a
/// user can tell which part of a package is refused without reading the code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OvfError {
    /// The XML is not well formed.
    #[error("malformed XML at byte {position}: {reason}")]
    Xml {
        /// Byte offset where the parser stopped.
        position: u64,
        /// What the parser said.
        reason: String,
    },
    /// The document is not UTF-8 (the only encoding accepted).
    #[error("descriptor is not UTF-8: {reason}")]
    NotUtf8 {
        /// Where decoding failed.
        reason: String,
    },
    /// A document type declaration was found: DTDs are refused (XXE, billion laughs).
    #[error("DOCTYPE declarations are refused (they enable entity expansion attacks)")]
    DoctypeRefused,
    /// An entity reference other than the five predefined ones and character references.
    #[error("entity reference &{entity}; is refused (only predefined entities are allowed)")]
    EntityRefused {
        /// The entity name.
        entity: String,
    },
    /// Something is larger than the configured limit.
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// What is too large.
        what: String,
        /// Its size (or the size reached when reading stopped).
        size: u64,
        /// The limit in force.
        limit: u64,
    },
    /// A structural limit (nesting depth, element count, entry count) was exceeded.
    #[error("{what} exceeds the limit of {limit}")]
    LimitExceeded {
        /// What is counted.
        what: String,
        /// The limit in force.
        limit: u64,
    },
    /// The root element is not an OVF `Envelope`.
    #[error("not an OVF descriptor: root element is {found}")]
    NotAnEnvelope {
        /// The root element found, `{namespace}local`.
        found: String,
    },
    /// The envelope namespace names an OVF version this crate does not read.
    #[error("unsupported OVF version: envelope namespace {namespace}")]
    UnsupportedVersion {
        /// The namespace URI.
        namespace: String,
    },
    /// A section, item or element this crate does not understand is marked required.
    #[error("required {element} in {context} is not understood (ovf:required is true)")]
    UnknownRequired {
        /// The element, `prefix:Local` for well-known namespaces, else `{namespace}Local`.
        element: String,
        /// Where it was found.
        context: String,
    },
    /// A mandatory attribute or element is missing.
    #[error("{context}: missing {what}")]
    Missing {
        /// What is missing, e.g. `ovf:href`.
        what: String,
        /// Where.
        context: String,
    },
    /// A value does not have the expected form.
    #[error("{what} {value:?} is invalid: {reason}")]
    InvalidValue {
        /// Which value.
        what: String,
        /// The text found.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A declared size is negative, not a number, overflows, or exceeds a limit.
    #[error("{what} {value:?} is refused: {reason}")]
    InvalidSize {
        /// Which size, e.g. `File file1 ovf:size`.
        what: String,
        /// The text found.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A file reference (`ovf:href`) is a URL, absolute, or escapes the package.
    #[error("href {href:?} is refused: {reason}")]
    BadHref {
        /// The href.
        href: String,
        /// Why.
        reason: String,
    },
    /// Two objects share an id that must be unique.
    #[error("duplicate {what} {id:?}")]
    Duplicate {
        /// What kind of object.
        what: String,
        /// The id.
        id: String,
    },
    /// A reference points to nothing.
    #[error("{what} refers to unknown {target} {id:?}")]
    DanglingReference {
        /// Who refers.
        what: String,
        /// What kind of object is referred to.
        target: String,
        /// The id referred to.
        id: String,
    },
    /// A manifest line cannot be read.
    #[error("manifest line {line}: {reason}")]
    ManifestSyntax {
        /// 1-based line number.
        line: usize,
        /// Why.
        reason: String,
    },
    /// A file or chunk is not covered by the manifest.
    #[error("{file} is not covered by the manifest")]
    NotInManifest {
        /// The file or chunk name.
        file: String,
    },
    /// A digest does not match the manifest.
    #[error("{file}: {algorithm} digest {actual} does not match the manifest ({expected})")]
    DigestMismatch {
        /// The file or chunk name.
        file: String,
        /// SHA1, SHA256 or SHA512.
        algorithm: String,
        /// Digest in the manifest.
        expected: String,
        /// Digest computed.
        actual: String,
    },
    /// The certificate policy refuses the package.
    #[error("certificate {file}: {reason}")]
    Certificate {
        /// The .cert entry.
        file: String,
        /// Why.
        reason: String,
    },
    /// A tar entry of an OVA is refused.
    #[error("OVA entry {name:?} is refused: {reason}")]
    EntryRefused {
        /// The entry name as stored.
        name: String,
        /// Why (link, device, absolute, `..`, duplicate, unreferenced, order).
        reason: String,
    },
    /// The OVA archive itself is unreadable.
    #[error("OVA archive {path}: {reason}")]
    Archive {
        /// The archive.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A referenced file is absent from the package.
    #[error("referenced file {href:?} is missing from the package")]
    MissingFile {
        /// The href.
        href: String,
    },
    /// A disk image cannot be read.
    #[error("disk image {file}: {reason}")]
    DiskImage {
        /// The file (href) holding the image.
        file: String,
        /// Why.
        reason: String,
    },
    /// A disk image format that is not supported.
    #[error("disk image {file}: format {format} is not supported")]
    UnsupportedFormat {
        /// The file.
        file: String,
        /// The format (URI or detected name).
        format: String,
    },
    /// A disk image refers to data outside itself (external extent, backing file).
    #[error("disk image {file} refers to {what}: external data is refused")]
    ExternalReference {
        /// The file.
        file: String,
        /// The external reference, e.g. `backing file "base.qcow2"`.
        what: String,
    },
    /// A required item of the descriptor cannot be honoured by ovm.
    #[error("{item} cannot be honoured: {reason}")]
    Unhonoured {
        /// The item, e.g. `VirtualSystem web, item 7 (ResourceType 0)`.
        item: String,
        /// Why.
        reason: String,
    },
    /// An external tool (qemu-img) failed.
    #[error("{tool} failed: {reason}")]
    Tool {
        /// The tool.
        tool: String,
        /// Its exit status and stderr.
        reason: String,
    },
    /// An I/O error on a named path.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, to what.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A core operation (storage plugin) failed.
    #[error(transparent)]
    Core(#[from] ovm_core::Error),
}

impl OvfError {
    /// An `Io` error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        OvfError::Io {
            context: context.into(),
            source,
        }
    }

    /// An `InvalidSize` error.
    pub fn size(
        what: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        OvfError::InvalidSize {
            what: what.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// An `InvalidValue` error.
    pub fn value(
        what: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        OvfError::InvalidValue {
            what: what.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// A `DiskImage` error.
    pub fn disk(file: impl Into<String>, reason: impl Into<String>) -> Self {
        OvfError::DiskImage {
            file: file.into(),
            reason: reason.into(),
        }
    }

    /// True when the input was refused (as opposed to a failure of the host: I/O, tools,
    /// storage). The CLI exits 2 for these.
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            OvfError::Io { .. } | OvfError::Tool { .. } | OvfError::Core(_)
        )
    }
}

impl From<OvfError> for ovm_core::Error {
    fn from(e: OvfError) -> Self {
        match e {
            OvfError::Core(core) => core,
            OvfError::Io { .. } | OvfError::Tool { .. } => {
                ovm_core::Error::backend_source("ovf", e)
            }
            other => ovm_core::Error::invalid("ovf", other.to_string()),
        }
    }
}
