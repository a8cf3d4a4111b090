//! ovm OVF/OVA: descriptors, archives, manifests, import.
//!
//! - [`parse`]: read a descriptor in any real dialect into the [`model`], safely;
//! - [`write`]: serialise the model as OVF 1.x or 2.0;
//! - [`manifest`]: `.mf` files (SHA1/SHA256/SHA512, both syntaxes);
//! - [`ova`]: stream OVA archives, verify, convert disks to sparse raw; write OVAs;
//! - [`disk`]: VMDK (streamOptimized, monolithicSparse) natively, qcow2 via `qemu-img`;
//! - [`mapping`]: descriptor → `ovm_core::model::VmSpec`, listing what is not honoured;
//! - [`inspect`]: the summary behind `ovm ovf inspect`;
//! - [`import`]: packages → templates and assemblies in a repository, through a
//!   `StoragePlugin`.
#![warn(missing_docs)]

pub mod disk;
pub mod error;
pub mod export;
pub mod import;
pub mod inspect;
pub mod limits;
pub mod manifest;
pub mod mapping;
pub mod model;
pub mod ova;
pub mod parse;
pub mod units;
pub mod write;
pub mod xml;

pub use error::{OvfError, Result};
pub use limits::{CertificatePolicy, HrefPolicy, Limits};
pub use model::{Envelope, OvfVersion};
pub use parse::{Parsed, parse};
