//! The protocol's types: what is sent ([`Request`]), what comes back ([`Response`]: a
//! [`Reply`] or a [`ControlError`]), its version, and the lines a VMM prints on standard
//! output ([`ProcessNotice`]). The wire format is in the [module docs](super).

use std::fmt;
use std::str::FromStr;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize};

use crate::vmm::{DeviceStates, ExitReason, RunState, VmmEvent, VmmStats};
use crate::vstate::vcpu::VcpuState;

/// The protocol this build speaks (see the module docs for what a version change means).
pub const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion { major: 1, minor: 0 };

/// Longest request line accepted, bytes (a guest message of 8 KiB as a JSON array fits).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Default graceful stop timeout.
pub const DEFAULT_STOP_TIMEOUT_MS: u64 = 10_000;

fn default_stop_timeout() -> u64 {
    DEFAULT_STOP_TIMEOUT_MS
}

/// A protocol version, `major.minor` on the wire (`"1.0"`). Peers with the same major
/// version understand each other; a different major version is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProtocolVersion {
    /// Changes when a request or reply changes meaning or shape.
    pub major: u16,
    /// Changes when something is only added.
    pub minor: u16,
}

impl ProtocolVersion {
    /// Whether a peer speaking `other` can be talked to.
    pub fn compatible_with(self, other: ProtocolVersion) -> bool {
        self.major == other.major
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for ProtocolVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("protocol version {s:?} is not <major>.<minor>");
        let (major, minor) = s.split_once('.').ok_or_else(bad)?;
        Ok(ProtocolVersion {
            major: major.parse().map_err(|_| bad())?,
            minor: minor.parse().map_err(|_| bad())?,
        })
    }
}

impl TryFrom<String> for ProtocolVersion {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<ProtocolVersion> for String {
    fn from(v: ProtocolVersion) -> String {
        v.to_string()
    }
}

/// A control request (Firecracker's `VmmAction`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op", deny_unknown_fields)]
pub enum Request {
    /// Start the vCPUs of a VM built with `--no-start`. Reply: `done`.
    Start,
    /// Pause the vCPUs; answered once all are parked. Reply: `done`.
    Pause,
    /// Resume them. Reply: `done`.
    Resume,
    /// Ask the guest to power off; kill it after the timeout. Reply: `stopped`.
    Stop {
        /// Milliseconds to wait for the guest.
        #[serde(default = "default_stop_timeout")]
        timeout_ms: u64,
    },
    /// Stop the VM now. Reply: `done`.
    Kill,
    /// Run state, exit reason and who the VMM is. Reply: `state`.
    State,
    /// Resource use and counters. Reply: `stats`.
    Stats,
    /// Console output so far. Reply: `console`.
    Console,
    /// Console input. Reply: `console_input`.
    ConsoleWrite {
        /// Bytes to type.
        data: Vec<u8>,
    },
    /// Send a key/value message to the guest. Reply: `done`.
    GuestSend {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
    },
    /// The value the guest last published under a key. Reply: `guest_value`.
    GuestRead {
        /// Key.
        key: String,
    },
    /// vCPU states captured at the last pause. Reply: `vcpu_states`.
    VcpuStates,
    /// Device states. Reply: `device_states`.
    DeviceStates,
    /// Stop the VM (if running) and end the VMM process. Reply: `done`.
    Shutdown,
    /// Subscribe this connection to the VMM's events. Reply: `subscribed`; then every
    /// event (`VmmEvent`, as on standard output) follows as a JSON line, the last one
    /// `exit`, then the connection closes with the process. No further requests on it.
    Events,
}

impl Request {
    /// The request's `op`, for messages.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Start => "start",
            Request::Pause => "pause",
            Request::Resume => "resume",
            Request::Stop { .. } => "stop",
            Request::Kill => "kill",
            Request::State => "state",
            Request::Stats => "stats",
            Request::Console => "console",
            Request::ConsoleWrite { .. } => "console_write",
            Request::GuestSend { .. } => "guest_send",
            Request::GuestRead { .. } => "guest_read",
            Request::VcpuStates => "vcpu_states",
            Request::DeviceStates => "device_states",
            Request::Shutdown => "shutdown",
            Request::Events => "events",
        }
    }
}

/// What `state` says: the VM's run state and who answers, so that whoever finds a socket
/// can check it talks to the VM (and the process) it expects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmmStatus {
    /// Run state.
    pub state: RunState,
    /// Why it exited, once it has.
    pub exit: Option<ExitReason>,
    /// The `--vm-id` the VMM was started with.
    pub vm_id: Option<String>,
    /// The VMM's process id.
    pub pid: u32,
}

/// A successful answer, with typed data for each kind of request (Firecracker's
/// `VmmData`). On the wire `{"type":"<variant>","data":<payload>}`; variants without a
/// payload have no `data`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "data")]
pub enum Reply {
    /// Done, nothing to report.
    Done,
    /// How a `stop` ended.
    Stopped(ExitReason),
    /// Answer to `state`.
    State(VmmStatus),
    /// Answer to `stats`.
    Stats(VmmStats),
    /// Console output so far.
    Console(Vec<u8>),
    /// Answer to `console_write`.
    ConsoleInput {
        /// Bytes queued (the rest did not fit the input buffer).
        taken: usize,
    },
    /// Answer to `guest_read`: the value, if the guest published one.
    GuestValue(Option<Vec<u8>>),
    /// vCPU states captured at the last pause, by vCPU index.
    VcpuStates(Vec<VcpuState>),
    /// Device states.
    DeviceStates(DeviceStates),
    /// Answer to `events`: event lines follow.
    Subscribed,
}

impl Reply {
    /// The variant's wire name, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Reply::Done => "done",
            Reply::Stopped(_) => "stopped",
            Reply::State(_) => "state",
            Reply::Stats(_) => "stats",
            Reply::Console(_) => "console",
            Reply::ConsoleInput { .. } => "console_input",
            Reply::GuestValue(_) => "guest_value",
            Reply::VcpuStates(_) => "vcpu_states",
            Reply::DeviceStates(_) => "device_states",
            Reply::Subscribed => "subscribed",
        }
    }
}

/// Why a request failed, as a stable string code (Firecracker's `VmmActionError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed: not UTF-8, not JSON, unknown op or field, over [`MAX_REQUEST_BYTES`].
    BadRequest,
    /// The VM's run state does not allow it (pausing a VM not running, vCPU states while
    /// running).
    InvalidState,
    /// Well formed but refused, e.g. a guest message over the channel's limits.
    Invalid,
    /// The VMM failed to do it.
    Internal,
    /// A code added by a newer minor version that this side does not know.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::Invalid => "invalid",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed request: its code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ControlError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
}

impl ControlError {
    /// An error with `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ControlError {
            code,
            message: message.into(),
        }
    }

    /// A `bad_request` error.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
}

/// One response line: the VMM's protocol version and the outcome. On the wire
/// `{"protocol":"1.0","ok":true,"result":<Reply>}` or
/// `{"protocol":"1.0","ok":false,"error":<ControlError>}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "WireResponse")]
pub struct Response {
    /// The version the VMM speaks.
    pub protocol: ProtocolVersion,
    /// The answer.
    pub outcome: Result<Reply, ControlError>,
}

impl Response {
    /// An answer in this build's protocol version.
    pub fn new(outcome: Result<Reply, ControlError>) -> Self {
        Response {
            protocol: PROTOCOL_VERSION,
            outcome,
        }
    }

    /// The response as one line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_else(|e| {
            // Only a payload serde cannot write (none today) gets here; still answer.
            let error = ControlError::new(ErrorCode::Internal, e.to_string());
            serde_json::to_vec(&Response::new(Err(error))).unwrap_or_default()
        });
        line.push(b'\n');
        line
    }
}

impl Serialize for Response {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Response", 3)?;
        m.serialize_field("protocol", &self.protocol)?;
        match &self.outcome {
            Ok(reply) => {
                m.serialize_field("ok", &true)?;
                m.serialize_field("result", reply)?;
            }
            Err(error) => {
                m.serialize_field("ok", &false)?;
                m.serialize_field("error", error)?;
            }
        }
        m.end()
    }
}

/// [`Response`] as it is spelled on the wire.
#[derive(Deserialize)]
struct WireResponse {
    protocol: ProtocolVersion,
    ok: bool,
    #[serde(default)]
    result: Option<Reply>,
    #[serde(default)]
    error: Option<ControlError>,
}

impl TryFrom<WireResponse> for Response {
    type Error = String;

    fn try_from(w: WireResponse) -> Result<Self, String> {
        let outcome = match (w.ok, w.result, w.error) {
            (true, Some(reply), None) => Ok(reply),
            (false, None, Some(error)) => Err(error),
            (true, _, _) => return Err("`ok: true` needs a `result` and no `error`".into()),
            (false, _, _) => return Err("`ok: false` needs an `error` and no `result`".into()),
        };
        Ok(Response {
            protocol: w.protocol,
            outcome,
        })
    }
}

/// What a VMM process says about itself on standard output, besides its events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum ProcessNotice {
    /// The VM is built and the socket listens: the first line, before any event. (With
    /// `--detach` the only one: standard output is let go after it.)
    Listening {
        /// The VMM's process id.
        pid: u32,
        /// The protocol it speaks; absent from VMMs older than versioning.
        #[serde(default)]
        protocol: Option<ProtocolVersion>,
    },
    /// The VM could not be built; the process exits with code 2.
    Error {
        /// Why.
        message: String,
    },
}

/// One line of a VMM's output (standard output, or an `events` subscription).
#[derive(Debug, Clone, PartialEq)]
pub enum OutputLine {
    /// An event.
    Event(VmmEvent),
    /// A notice about the process.
    Notice(ProcessNotice),
    /// Something else (ignored by readers).
    Other,
}

impl OutputLine {
    /// Reads one line.
    pub fn parse(line: &str) -> OutputLine {
        if let Ok(event) = serde_json::from_str(line) {
            OutputLine::Event(event)
        } else if let Ok(notice) = serde_json::from_str(line) {
            OutputLine::Notice(notice)
        } else {
            OutputLine::Other
        }
    }
}

/// Parses one request line; a malformed line is a `bad_request` error.
pub fn parse_request(line: &str) -> Result<Request, ControlError> {
    if line.len() > MAX_REQUEST_BYTES {
        return Err(ControlError::bad_request(format!(
            "request of {} bytes is over {MAX_REQUEST_BYTES}",
            line.len()
        )));
    }
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| ControlError::bad_request(e.to_string()))?;
    // serde would also read `["pause"]` (a tag, then fields in order) as a request.
    if !value.is_object() {
        return Err(ControlError::bad_request("a request is a JSON object"));
    }
    let request: Request = serde_json::from_value(value.clone())
        .map_err(|e| ControlError::bad_request(e.to_string()))?;
    // serde ignores unknown fields of unit variants in tagged enums; refuse them here so a
    // typo ("timeout" for "timeout_ms") is an error, not silently a default.
    let known = serde_json::to_value(&request)
        .map_err(|e| ControlError::new(ErrorCode::Internal, e.to_string()))?;
    if let (Some(given), Some(known)) = (value.as_object(), known.as_object())
        && let Some(extra) = given.keys().find(|k| !known.contains_key(*k))
    {
        return Err(ControlError::bad_request(format!(
            "unknown field `{extra}`"
        )));
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// Every request, once.
    fn all_requests() -> Vec<Request> {
        vec![
            Request::Start,
            Request::Pause,
            Request::Resume,
            Request::Stop { timeout_ms: 250 },
            Request::Kill,
            Request::State,
            Request::Stats,
            Request::Console,
            Request::ConsoleWrite {
                data: b"ls\n".to_vec(),
            },
            Request::GuestSend {
                key: "ping".into(),
                value: b"hi".to_vec(),
            },
            Request::GuestRead { key: "ping".into() },
            Request::VcpuStates,
            Request::DeviceStates,
            Request::Shutdown,
            Request::Events,
        ]
    }

    /// Every reply, once (and the optional payloads both ways).
    fn all_replies() -> Vec<Reply> {
        vec![
            Reply::Done,
            Reply::Stopped(ExitReason::PowerOff),
            Reply::Stopped(ExitReason::Crash {
                reason: "triple fault".into(),
            }),
            Reply::State(VmmStatus {
                state: RunState::Running,
                exit: None,
                vm_id: Some("vm-1".into()),
                pid: 42,
            }),
            Reply::State(VmmStatus {
                state: RunState::Exited,
                exit: Some(ExitReason::Killed),
                vm_id: None,
                pid: 7,
            }),
            Reply::Stats(VmmStats {
                memory_mib: 16,
                boot_us: Some(900),
                ..VmmStats::default()
            }),
            Reply::Console(b"ovm-guest: ready\n".to_vec()),
            Reply::ConsoleInput { taken: 3 },
            Reply::GuestValue(Some(b"echo:hi".to_vec())),
            Reply::GuestValue(None),
            Reply::VcpuStates(Vec::new()),
            Reply::VcpuStates(vec![VcpuState {
                id: 1,
                msrs: vec![(0x10, 5)],
                ..VcpuState::default()
            }]),
            Reply::DeviceStates(device_states()),
            Reply::Subscribed,
        ]
    }

    fn device_states() -> DeviceStates {
        DeviceStates {
            serial: crate::devices::serial::SerialState::default(),
            i8042: crate::devices::i8042::I8042::default(),
            boot_timer: crate::devices::boot_timer::BootTimer::default(),
            guest_channel: crate::devices::guest_channel::ChannelState::default(),
            disks: vec![crate::devices::virtio_block::BlockState::default()],
        }
    }

    fn all_codes() -> [ErrorCode; 5] {
        [
            ErrorCode::BadRequest,
            ErrorCode::InvalidState,
            ErrorCode::Invalid,
            ErrorCode::Internal,
            ErrorCode::Unknown,
        ]
    }

    /// Encodes, decodes and encodes again: the same JSON both times. Returns the JSON and
    /// the decoded value.
    fn round_trip<T: Serialize + serde::de::DeserializeOwned>(value: &T) -> (Value, T) {
        let wire = serde_json::to_string(value).unwrap();
        let back: T = serde_json::from_str(&wire)
            .unwrap_or_else(|e| panic!("{wire} does not read back: {e}"));
        let first: Value = serde_json::from_str(&wire).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), first, "{wire}");
        (first, back)
    }

    #[test]
    fn every_request_round_trips_and_parses_as_the_vmm_reads_it() {
        for request in all_requests() {
            let (wire, back) = round_trip(&request);
            assert_eq!(back, request);
            assert_eq!(wire["op"], request.op(), "{wire}");
            assert_eq!(parse_request(&wire.to_string()).unwrap(), request);
        }
    }

    #[test]
    fn every_reply_round_trips_inside_a_response_with_its_version() {
        for reply in all_replies() {
            let kind = reply.kind();
            let (wire, back) = round_trip(&Response::new(Ok(reply)));
            assert_eq!(wire["protocol"], "1.0");
            assert_eq!(wire["ok"], true);
            assert_eq!(wire["result"]["type"], kind, "{wire}");
            assert_eq!(back.protocol, PROTOCOL_VERSION);
            assert_eq!(back.outcome.unwrap().kind(), kind);
        }
    }

    #[test]
    fn every_error_code_round_trips_with_its_stable_string() {
        for code in all_codes() {
            let error = ControlError::new(code, "why");
            let (wire, back) = round_trip(&Response::new(Err(error.clone())));
            assert_eq!(wire["ok"], false);
            assert_eq!(wire["error"]["code"], code.as_str());
            assert_eq!(back.outcome.unwrap_err(), error);
        }
        let codes: Vec<Value> = all_codes()
            .iter()
            .map(|c| serde_json::to_value(c).unwrap())
            .collect();
        assert_eq!(
            codes,
            [
                "bad_request",
                "invalid_state",
                "invalid",
                "internal",
                "unknown"
            ]
        );
        // A code from a newer minor version reads as `unknown`.
        let newer: ErrorCode = serde_json::from_value(json!("quota_exceeded")).unwrap();
        assert_eq!(newer, ErrorCode::Unknown);
    }

    #[test]
    fn wire_forms_are_the_documented_ones() {
        let line = |r: Response| String::from_utf8(r.to_line()).unwrap();
        assert_eq!(
            line(Response::new(Ok(Reply::Done))),
            "{\"protocol\":\"1.0\",\"ok\":true,\"result\":{\"type\":\"done\"}}\n"
        );
        assert_eq!(
            line(Response::new(Ok(Reply::ConsoleInput { taken: 2 }))),
            "{\"protocol\":\"1.0\",\"ok\":true,\"result\":{\"type\":\"console_input\",\"data\":{\"taken\":2}}}\n"
        );
        assert_eq!(
            line(Response::new(Err(ControlError::bad_request("no")))),
            "{\"protocol\":\"1.0\",\"ok\":false,\"error\":{\"code\":\"bad_request\",\"message\":\"no\"}}\n"
        );
    }

    #[test]
    fn inconsistent_responses_do_not_decode() {
        for bad in [
            json!({"protocol": "1.0", "ok": true}),
            json!({"protocol": "1.0", "ok": false}),
            json!({"protocol": "1.0", "ok": true, "result": {"type": "done"},
                   "error": {"code": "internal", "message": "both"}}),
            json!({"protocol": "1.0", "ok": true, "result": {"type": "teleported"}}),
            json!({"protocol": "one", "ok": true, "result": {"type": "done"}}),
            json!({"ok": true, "result": {"type": "done"}}),
        ] {
            assert!(
                serde_json::from_value::<Response>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn versions_read_and_compare_by_major() {
        let v: ProtocolVersion = "2.13".parse().unwrap();
        assert_eq!((v.major, v.minor), (2, 13));
        assert_eq!(v.to_string(), "2.13");
        for bad in ["", "1", "1.", ".1", "1.0.0", "x.y", "-1.0"] {
            assert!(bad.parse::<ProtocolVersion>().is_err(), "{bad:?}");
        }
        let minor_later = ProtocolVersion {
            minor: PROTOCOL_VERSION.minor + 1,
            ..PROTOCOL_VERSION
        };
        assert!(PROTOCOL_VERSION.compatible_with(minor_later));
        assert!(!PROTOCOL_VERSION.compatible_with(v));
    }

    #[test]
    fn notices_round_trip_and_output_lines_are_told_apart() {
        for notice in [
            ProcessNotice::Listening {
                pid: 9,
                protocol: Some(PROTOCOL_VERSION),
            },
            ProcessNotice::Error {
                message: "no kernel".into(),
            },
        ] {
            let (wire, back) = round_trip(&notice);
            assert_eq!(back, notice);
            assert_eq!(
                OutputLine::parse(&wire.to_string()),
                OutputLine::Notice(notice)
            );
        }
        // A VMM from before versioning announced itself without a protocol.
        assert_eq!(
            OutputLine::parse(r#"{"event":"listening","pid":3}"#),
            OutputLine::Notice(ProcessNotice::Listening {
                pid: 3,
                protocol: None
            })
        );
        assert_eq!(
            OutputLine::parse(r#"{"event":"started"}"#),
            OutputLine::Event(VmmEvent::Started)
        );
        assert_eq!(OutputLine::parse("hello"), OutputLine::Other);
    }

    #[test]
    fn requests_parse_and_garbage_gets_bad_request() {
        assert_eq!(parse_request(r#"{"op":"pause"}"#).unwrap(), Request::Pause);
        assert_eq!(
            parse_request(r#"{"op":"stop"}"#).unwrap(),
            Request::Stop {
                timeout_ms: DEFAULT_STOP_TIMEOUT_MS
            }
        );
        for bad in [
            "",
            "{",
            r#"{"op":"fly"}"#,
            r#"{"op":"pause","x":1}"#,
            "[1,2]",
            r#"["pause"]"#,
            r#"["stop",5]"#,
            "null",
            "\u{0}",
        ] {
            let e = parse_request(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{bad:?}");
        }
        let huge = format!(
            r#"{{"op":"console_write","data":[{}1]}}"#,
            "1,".repeat(MAX_REQUEST_BYTES)
        );
        assert_eq!(
            parse_request(&huge).unwrap_err().code,
            ErrorCode::BadRequest
        );
    }
}
