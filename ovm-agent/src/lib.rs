//! ovm-agent: the per-server agent of ovm, and its client.
//!
//! As in Oracle VM, every server runs an agent that carries out the manager's requests on
//! that server's hypervisor and reports what happens there. The agent serves one
//! [`ovm_core::Hypervisor`] (KVM, Xen or the simulator, built by `ovm-backends`) over
//! HTTPS; the [`client`] gives the manager a `Connector` for servers reached that way, so
//! the manager, the CLI and Python use remote servers exactly as local ones.
//!
//! - [`protocol`]: the versioned JSON protocol (docs/agent-protocol.md);
//! - [`tls`]: self-made identities, certificates pinned by fingerprint;
//! - [`server`]: the daemon: ownership, the request journal, the event log;
//! - [`client`]: `AgentClient`, `RemoteHypervisor`, `AgentConnector`.
#![warn(missing_docs)]

pub mod cli;
pub mod client;
pub mod protocol;
pub mod server;
pub mod tls;

pub use client::{AgentClient, AgentConnector, RemoteHypervisor, with_agents};
pub use server::{AgentOptions, RunningAgent, start};
pub use tls::{Fingerprint, Identity};
