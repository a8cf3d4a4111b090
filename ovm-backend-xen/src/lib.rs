//! ovm Xen backend: drives Xen's own toolstack (`xl`, on libxl) from dom0, the way the
//! Oracle VM agent does.
//!
//! - [`config`] turns a `VmConfig` into an xl domain configuration (PV, HVM, PVHVM, PVH),
//!   escaping or refusing every value so nothing can inject configuration lines.
//! - [`runner`] is the seam to the toolstack: [`ProcessXl`] runs the real `xl`,
//!   [`fake::FakeXl`] simulates it for tests without Xen.
//! - [`parse`] reads `xl info`, `xl list -v`, `xl list -l` and `xl uptime`.
//! - [`XenHypervisor`] implements `ovm_core::Hypervisor` on top of them;
//!   [`XenConnector`] hands it to a manager running in dom0.
//!
//! The backend runs in dom0 (it needs `xl`, xenstored and xenconsoled there); see
//! `docs/xen.md` for the test bed that boots Xen under QEMU and runs the integration
//! tests inside dom0.

pub mod backend;
pub mod config;
pub mod connector;
pub mod console;
pub mod error;
pub mod fake;
pub mod parse;
pub mod runner;
pub mod xlcfg;

pub use backend::{XenHypervisor, XenOptions};
pub use config::{ConfigOptions, LifecycleAction, LifecycleActions};
pub use connector::{XenConnector, dom0_available};
pub use error::XlError;
pub use runner::{ProcessXl, XlRunner};
