//! ovm OVF/OVA: descriptors, archives, manifests, import.
//!
//! - [`mod@parse`]: read a descriptor in any real dialect into the [`model`], safely;
//! - [`mod@write`]: serialise the model as OVF 1.x or 2.0;
//! - [`manifest`]: `.mf` files (SHA1/SHA256/SHA512, both syntaxes);
//! - [`ova`]: stream OVA archives, verify, convert disks to sparse raw; write OVAs;
//! - [`disk`]: VMDK (streamOptimized, monolithicSparse) natively, qcow2 via `qemu-img`;
//! - [`mapping`]: descriptor → `ovm_core::model::VmSpec`, listing what is not honoured;
//! - [`inspect`]: the summary behind `ovm ovf inspect`;
//! - [`import`]: packages → templates and assemblies in a repository, through a
//!   `StoragePlugin`;
//! - [`jobs`]: import as a job of an `ovm_manager::Manager`, export of its templates (what
//!   the `ovm` command line and the Python bindings call).
//!
//! Policies, in one place:
//! - XML: no DTD (`<!DOCTYPE>` refused), only predefined entities and character
//!   references, bounded depth and element count, UTF-8 only.
//! - `ovf:required`: an element ovm does not model fails the parse when it is required
//!   (explicitly, or by default for sections, except recognised vendor sections such as
//!   `vmw:CpuCompatibilitySection`); optional ones are kept and reported. Hardware items of
//!   a kind ovm does not know fail the import when required.
//! - Sizes: negative, non-numeric, overflowing or over-limit sizes are refused
//!   ([`Limits`]: descriptor 12 MiB, manifest 1 MiB, files and disks 64 TiB).
//! - Hrefs: URLs, absolute paths and `..` are refused unless [`HrefPolicy`] allows them.
//! - Certificates: recognised and reported; X.509 signatures are not verified
//!   ([`CertificatePolicy::Refuse`] refuses signed packages instead). Manifests are always
//!   verified when present; [`Limits::require_manifest`] refuses packages without one.
#![warn(missing_docs)]

pub mod disk;
pub mod error;
pub mod export;
pub mod import;
pub mod inspect;
pub mod jobs;
pub mod limits;
pub mod manifest;
pub mod mapping;
pub mod model;
mod ns;
pub mod ova;
pub mod parse;
pub mod units;
pub mod write;
pub mod xml;

pub use error::{OvfError, Result};
pub use limits::{CertificatePolicy, HrefPolicy, Limits};
pub use model::{Envelope, OvfVersion};
pub use parse::{Parsed, parse};
