//! The control protocol between the driver (`KvmHypervisor`) and an `ovm-vmm` process,
//! typed both ways in the manner of Firecracker's `VmmAction` / `VmmData` /
//! `VmmActionError`: a [`Request`] is answered by a [`Reply`] or a [`ControlError`]
//! (an [`ErrorCode`] and a message). [`protocol`] has the types, [`server`] the VMM's
//! side, [`client`] the one client (async, with a blocking wrapper).
//!
//! **Socket.** JSON lines on the VMM's Unix socket (`api.sock`). Each request line is
//! answered by one response line, in order; a connection carries any number of requests.
//!
//! ```text
//! → {"op":"pause"}
//! ← {"protocol":"1.0","ok":true,"result":{"type":"done"}}
//! → {"op":"state"}
//! ← {"protocol":"1.0","ok":true,"result":{"type":"state","data":{"state":"running","exit":null,"vm_id":"…","pid":4242}}}
//! → {"op":"guest_send","key":"ping","value":[104,105]}
//! ← {"protocol":"1.0","ok":true,"result":{"type":"done"}}
//! → {"op":"bogus"}
//! ← {"protocol":"1.0","ok":false,"error":{"code":"bad_request","message":"unknown variant `bogus`, …"}}
//! ```
//!
//! A request is `op` and its fields ([`Request`]); an unknown op or field, a line that is
//! not UTF-8 or JSON, or one over [`MAX_REQUEST_BYTES`] is answered `bad_request`, and the
//! connection goes on. A reply is `{"type":…,"data":…}` ([`Reply`]; each request's reply
//! type is on its variant). Error codes are stable strings: `bad_request`,
//! `invalid_state`, `invalid`, `internal`. `events` is answered `subscribed`; then
//! every event (`VmmEvent`) follows as a line, `exit` last, and the connection closes
//! with the process.
//!
//! **Standard output.** The VMM's first line is [`ProcessNotice::Listening`]
//! (`{"event":"listening","pid":N,"protocol":"1.0"}`) once the VM is built and the socket
//! listens, before any vCPU runs (with `--detach`, the only line); or
//! [`ProcessNotice::Error`] if the VM could not be built. Then, unless detached, its
//! events.
//!
//! **Versions.** [`PROTOCOL_VERSION`] is `major.minor`; every response and the
//! `listening` line carry the VMM's. Within a major version the protocol only grows: new
//! requests (an older VMM answers them `bad_request`), new optional fields, new reply
//! variants for new requests, new error codes (read as [`ErrorCode::Unknown`]); an
//! existing request keeps its reply type. Anything else is a new major version. The
//! client reads the version of every answer before the rest of it and refuses a
//! different major version, or none, with [`ClientError::VersionMismatch`], naming both
//! versions and the VM. So the driver refuses (and kills) a VMM it starts as soon as it
//! announces itself (a detached one before its vCPUs run), and leaves one it finds in a
//! run directory alone, unadopted, at its first answer.

pub mod client;
pub mod protocol;
pub mod server;

pub use client::{BlockingClient, ClientError, Connection, ControlClient, EventLines};
pub use protocol::{
    ControlError, DEFAULT_STOP_TIMEOUT_MS, ErrorCode, MAX_REQUEST_BYTES, OutputLine,
    PROTOCOL_VERSION, ProcessNotice, ProtocolVersion, Reply, Request, Response, VmmStatus,
    parse_request,
};
