//! The agent protocol, version 1 (written down in docs/agent-protocol.md): JSON over
//! HTTPS, typed both ways.
//!
//! - `GET /v1/hello` → [`Hello`]: protocol version, backend, the owner. Open to anyone
//!   who reaches the port, so a manager can check what it talks to before owning it.
//! - `POST /v1/ownership` [`TakeOwnership`] / `DELETE /v1/ownership`: take or release the
//!   agent, by its password and the caller's client certificate.
//! - `POST /v1/call` [`CallRequest`] → [`CallResponse`]: one hypervisor operation, with a
//!   request id; a state-changing call retried with the same id is answered from its
//!   first outcome.
//! - `GET /v1/events?epoch=E&since=N&wait_ms=W` → [`EventBatch`]: VM events after sequence
//!   `N` of agent run `E`, waiting up to `W` ms for one (long poll).
//!
//! A minor version only adds (optional fields, new calls); a client refuses an agent of
//! another major version.

use std::fmt;
use std::time::Duration;

use ovm_core::hypervisor::{Capabilities, HostInfo, VmConfig, VmEvent, VmStats};
use ovm_core::model::{HypervisorKind, VmState};
use ovm_core::{Error, VmId};
use serde::{Deserialize, Serialize};

/// The protocol this build speaks.
pub const PROTOCOL: Version = Version { major: 1, minor: 0 };

/// Largest request body the agent reads, bytes (a VM definition is a few KiB).
pub const MAX_BODY: usize = 1 << 20;

/// Longest an event poll may wait.
pub const MAX_EVENT_WAIT: Duration = Duration::from_secs(30);

/// Most events one poll returns.
pub const MAX_EVENT_BATCH: usize = 1000;

/// A protocol version, `MAJOR.MINOR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Changes only when a version cannot understand the other.
    pub major: u16,
    /// Additions.
    pub minor: u16,
}

impl Version {
    /// True if a peer speaking `other` can be talked to.
    pub fn compatible(self, other: Version) -> bool {
        self.major == other.major
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl std::str::FromStr for Version {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (major, minor) = s.split_once('.').unwrap_or((s, "0"));
        let bad = || format!("{s:?} is not a protocol version (MAJOR.MINOR)");
        Ok(Version {
            major: major.parse().map_err(|_| bad())?,
            minor: minor.parse().map_err(|_| bad())?,
        })
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What an agent says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol it speaks.
    pub protocol: Version,
    /// Its build (`ovm-agent 0.1.0`).
    pub agent: String,
    /// The hypervisor it serves.
    pub hypervisor: HypervisorKind,
    /// Its host name.
    pub hostname: String,
    /// This run of the agent: event sequences restart with a new epoch.
    pub epoch: String,
    /// The last event sequence of this epoch: a new reader starts after it.
    pub seq: u64,
    /// The manager that owns it, if one does.
    pub owner: Option<Owner>,
}

/// The manager owning an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Owner {
    /// The name the manager gave when it took ownership.
    pub name: String,
    /// Its client certificate.
    pub fingerprint: String,
}

/// `POST /v1/ownership`: the agent password, and who the caller is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TakeOwnership {
    /// The agent password.
    pub password: String,
    /// The manager's name, shown to others that try to use the agent.
    pub manager: String,
}

/// One hypervisor operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Call {
    /// The host's CPUs and memory.
    HostInfo,
    /// What the hypervisor can do.
    Capabilities,
    /// Defines a VM.
    Define {
        /// Its definition, disks and NICs resolved.
        config: Box<VmConfig>,
    },
    /// Forgets a stopped VM.
    Undefine {
        /// The VM.
        vm: VmId,
    },
    /// Starts a defined VM.
    Start {
        /// The VM.
        vm: VmId,
    },
    /// Asks the guest to stop; kills it after `timeout_ms`.
    Stop {
        /// The VM.
        vm: VmId,
        /// Grace period.
        timeout_ms: u64,
    },
    /// Kills a VM.
    Kill {
        /// The VM.
        vm: VmId,
    },
    /// Pauses a VM.
    Pause {
        /// The VM.
        vm: VmId,
    },
    /// Resumes a paused VM.
    Resume {
        /// The VM.
        vm: VmId,
    },
    /// A VM's state.
    State {
        /// The VM.
        vm: VmId,
    },
    /// Every VM the hypervisor knows, with its state.
    List,
    /// A VM's resource use.
    Stats {
        /// The VM.
        vm: VmId,
    },
    /// The console output kept so far.
    ConsoleBuffer {
        /// The VM.
        vm: VmId,
    },
    /// Types into the console.
    ConsoleWrite {
        /// The VM.
        vm: VmId,
        /// Bytes, base64.
        input: Bytes,
    },
    /// Sends a guest key/value message.
    GuestSend {
        /// The VM.
        vm: VmId,
        /// The key.
        key: String,
        /// The value, base64.
        value: Bytes,
    },
    /// Reads what the guest published under a key.
    GuestRead {
        /// The VM.
        vm: VmId,
        /// The key.
        key: String,
    },
    /// Changes a running VM's vCPUs.
    SetVcpus {
        /// The VM.
        vm: VmId,
        /// The new count.
        vcpus: u32,
    },
    /// Changes a running VM's memory.
    SetMemory {
        /// The VM.
        vm: VmId,
        /// The new size, MiB.
        memory_mib: u64,
    },
}

impl Call {
    /// The operation's name (`start`, `define`), for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Call::HostInfo => "host_info",
            Call::Capabilities => "capabilities",
            Call::Define { .. } => "define",
            Call::Undefine { .. } => "undefine",
            Call::Start { .. } => "start",
            Call::Stop { .. } => "stop",
            Call::Kill { .. } => "kill",
            Call::Pause { .. } => "pause",
            Call::Resume { .. } => "resume",
            Call::State { .. } => "state",
            Call::List => "list",
            Call::Stats { .. } => "stats",
            Call::ConsoleBuffer { .. } => "console_buffer",
            Call::ConsoleWrite { .. } => "console_write",
            Call::GuestSend { .. } => "guest_send",
            Call::GuestRead { .. } => "guest_read",
            Call::SetVcpus { .. } => "set_vcpus",
            Call::SetMemory { .. } => "set_memory",
        }
    }

    /// True for calls that change something: those are recorded by request id and never
    /// applied twice.
    pub fn changes_state(&self) -> bool {
        !matches!(
            self,
            Call::HostInfo
                | Call::Capabilities
                | Call::State { .. }
                | Call::List
                | Call::Stats { .. }
                | Call::ConsoleBuffer { .. }
                | Call::GuestRead { .. }
        )
    }
}

/// `POST /v1/call`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallRequest {
    /// Chosen by the caller, unique per operation; the same for its retries.
    pub request_id: uuid::Uuid,
    /// What to do.
    pub call: Call,
}

/// What a call returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Reply {
    /// Done; nothing to return.
    Done,
    /// For `host_info`.
    HostInfo(HostInfo),
    /// For `capabilities`.
    Capabilities(Capabilities),
    /// For `state`.
    State(VmState),
    /// For `list`.
    List(Vec<(VmId, VmState)>),
    /// For `stats`.
    Stats(VmStats),
    /// For `console_buffer`.
    Bytes(Bytes),
    /// For `guest_read`.
    GuestValue(Option<Bytes>),
}

/// The body of every `/v1/call` answer (and of refusals): the protocol, then the outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallResponse {
    /// The protocol the agent speaks.
    pub protocol: Version,
    /// The outcome.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// A call's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It worked.
    Ok(Reply),
    /// It did not.
    Error(WireError),
}

/// An `ovm_core::Error` on the wire: its code and fields, so the manager acts on an
/// agent's error exactly as on a local backend's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum WireError {
    /// [`Error::NotFound`].
    NotFound {
        /// What kind of object.
        kind: String,
        /// Which.
        id: String,
    },
    /// [`Error::AlreadyExists`].
    AlreadyExists {
        /// What kind of object.
        kind: String,
        /// Which.
        id: String,
    },
    /// [`Error::Conflict`].
    Conflict {
        /// What kind of object.
        kind: String,
        /// Which.
        id: String,
        /// Expected revision.
        expected: u64,
        /// Found revision.
        found: u64,
    },
    /// [`Error::InvalidSpec`].
    InvalidSpec {
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
    /// [`Error::InvalidState`].
    InvalidState {
        /// What kind of object.
        kind: String,
        /// Which.
        id: String,
        /// Its state.
        state: String,
        /// What was attempted.
        op: String,
    },
    /// [`Error::Capacity`].
    Capacity {
        /// What ran out.
        reason: String,
    },
    /// [`Error::Unsupported`].
    Unsupported {
        /// The operation.
        op: String,
        /// The backend.
        backend: String,
    },
    /// [`Error::Backend`].
    Backend {
        /// Which backend.
        backend: String,
        /// What it said.
        message: String,
    },
    /// [`Error::Timeout`].
    Timeout {
        /// What was waited for.
        what: String,
        /// How long, ms.
        after_ms: u64,
    },
    /// [`Error::Aborted`].
    Aborted {
        /// What.
        what: String,
    },
    /// The request itself was refused (malformed, too large, not allowed).
    Refused {
        /// HTTP status it came with.
        status: u16,
        /// Why.
        message: String,
    },
}

/// Kinds of objects errors name (`Error` keeps them as `&'static str`).
const KINDS: &[&str] = &[
    "vm",
    "server",
    "pool",
    "repository",
    "volume",
    "network",
    "template",
    "assembly",
    "job",
    "vnic",
    "storage plugin",
];

fn static_kind(kind: &str) -> &'static str {
    KINDS
        .iter()
        .find(|k| **k == kind)
        .copied()
        .unwrap_or("object")
}

impl From<&Error> for WireError {
    fn from(e: &Error) -> Self {
        match e.clone() {
            Error::NotFound { kind, id } => WireError::NotFound {
                kind: kind.into(),
                id,
            },
            Error::AlreadyExists { kind, id } => WireError::AlreadyExists {
                kind: kind.into(),
                id,
            },
            Error::Conflict {
                kind,
                id,
                expected,
                found,
            } => WireError::Conflict {
                kind,
                id,
                expected,
                found,
            },
            Error::InvalidSpec { field, reason } => WireError::InvalidSpec { field, reason },
            Error::InvalidState {
                kind,
                id,
                state,
                op,
            } => WireError::InvalidState {
                kind: kind.into(),
                id,
                state,
                op,
            },
            Error::Capacity { reason } => WireError::Capacity { reason },
            Error::Unsupported { op, backend } => WireError::Unsupported { op, backend },
            Error::Timeout { what, after } => WireError::Timeout {
                what,
                after_ms: after.as_millis() as u64,
            },
            Error::Aborted { what } => WireError::Aborted { what },
            other => WireError::Backend {
                backend: match &other {
                    Error::Backend { backend, .. } => backend.clone(),
                    _ => "agent".into(),
                },
                message: match &other {
                    Error::Backend {
                        message,
                        source: Some(source),
                        ..
                    } => format!("{message}: {source}"),
                    Error::Backend { message, .. } => message.clone(),
                    _ => other.to_string(),
                },
            },
        }
    }
}

impl WireError {
    /// The error a caller of the agent gets; `server` names the agent in refusals.
    pub fn into_error(self, server: &str) -> Error {
        match self {
            WireError::NotFound { kind, id } => Error::NotFound {
                kind: static_kind(&kind),
                id,
            },
            WireError::AlreadyExists { kind, id } => Error::AlreadyExists {
                kind: static_kind(&kind),
                id,
            },
            WireError::Conflict {
                kind,
                id,
                expected,
                found,
            } => Error::Conflict {
                kind,
                id,
                expected,
                found,
            },
            WireError::InvalidSpec { field, reason } => Error::InvalidSpec { field, reason },
            WireError::InvalidState {
                kind,
                id,
                state,
                op,
            } => Error::InvalidState {
                kind: static_kind(&kind),
                id,
                state,
                op,
            },
            WireError::Capacity { reason } => Error::Capacity { reason },
            WireError::Unsupported { op, backend } => Error::Unsupported { op, backend },
            WireError::Backend { backend, message } => Error::backend(backend, message),
            WireError::Timeout { what, after_ms } => Error::Timeout {
                what,
                after: Duration::from_millis(after_ms),
            },
            WireError::Aborted { what } => Error::Aborted { what },
            WireError::Refused { status, message } => Error::backend(
                "agent",
                format!("agent of server {server} refused the request ({status}): {message}"),
            ),
        }
    }

    /// The HTTP status it travels with.
    pub fn status(&self) -> u16 {
        match self {
            WireError::NotFound { .. } => 404,
            WireError::AlreadyExists { .. }
            | WireError::Conflict { .. }
            | WireError::InvalidState { .. } => 409,
            WireError::InvalidSpec { .. } => 400,
            WireError::Capacity { .. } => 507,
            WireError::Unsupported { .. } => 501,
            WireError::Backend { .. } => 502,
            WireError::Timeout { .. } => 504,
            WireError::Aborted { .. } => 409,
            WireError::Refused { status, .. } => *status,
        }
    }
}

/// One VM event with its place in the agent's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sequenced {
    /// Its sequence number in this epoch, from 1.
    pub seq: u64,
    /// The event.
    pub event: VmEvent,
}

/// `GET /v1/events`: what happened after the caller's sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    /// The agent run these sequences belong to. A different epoch than the caller asked
    /// for means the agent restarted: `events` then starts at the new epoch's beginning.
    pub epoch: String,
    /// Events in order.
    pub events: Vec<Sequenced>,
    /// The sequence to ask after next time.
    pub next: u64,
    /// True if events the caller had not seen are gone (the log is bounded): the caller
    /// must re-read the VMs' states.
    pub gap: bool,
}

/// Bytes as base64 in JSON.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine;
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(Bytes)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
