//! The control API of an `ovm-vmm` process: one JSON object per line over a Unix socket,
//! each request answered by one response line.
//!
//! ```text
//! → {"op":"pause"}
//! ← {"ok":true}
//! → {"op":"guest_send","key":"ping","value":[104,105]}
//! ← {"ok":true}
//! → {"op":"bogus"}
//! ← {"ok":false,"error":{"code":"bad_request","message":"unknown variant `bogus`, ..."}}
//! ```
//!
//! Events (started, ready, console output, guest messages, exit) go the other way as JSON
//! lines (`VmmEvent`): on the process's standard output, and on every connection that sent
//! `{"op":"events"}` (how a detached VMM is followed by whichever process adopts it).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest request line accepted, bytes (a guest message of 8 KiB as a JSON array fits).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Default graceful stop timeout.
pub const DEFAULT_STOP_TIMEOUT_MS: u64 = 10_000;

fn default_stop_timeout() -> u64 {
    DEFAULT_STOP_TIMEOUT_MS
}

/// A control request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op", deny_unknown_fields)]
pub enum Request {
    /// Start the vCPUs of a VM built with `--no-start`.
    Start,
    /// Pause the vCPUs.
    Pause,
    /// Resume them.
    Resume,
    /// Ask the guest to power off; kill it after the timeout.
    Stop {
        /// Milliseconds to wait for the guest.
        #[serde(default = "default_stop_timeout")]
        timeout_ms: u64,
    },
    /// Stop the VM now.
    Kill,
    /// Run state, exit reason.
    State,
    /// Resource use and counters.
    Stats,
    /// Console output so far.
    Console,
    /// Console input.
    ConsoleWrite {
        /// Bytes to type.
        data: Vec<u8>,
    },
    /// Send a key/value message to the guest.
    GuestSend {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
    },
    /// The value the guest last published under a key.
    GuestRead {
        /// Key.
        key: String,
    },
    /// vCPU states captured at the last pause.
    VcpuStates,
    /// Device states.
    DeviceStates,
    /// Stop the VM (if running) and end the VMM process.
    Shutdown,
    /// Subscribe this connection to the VMM's events: after the `ok` line, every event
    /// (`VmmEvent`, as on standard output) follows as a JSON line, the last one `exit`, then
    /// the connection closes with the process. No further requests on this connection.
    Events,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// `bad_request`, `invalid_state`, `invalid`, `internal`.
    pub code: String,
    /// For people.
    pub message: String,
}

/// A response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether it worked.
    pub ok: bool,
    /// The result, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// The error, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

impl Response {
    /// Success with an optional result.
    pub fn ok(result: Option<serde_json::Value>) -> Self {
        Response {
            ok: true,
            result,
            error: None,
        }
    }

    /// Failure.
    pub fn err(code: &str, message: impl Into<String>) -> Self {
        Response {
            ok: false,
            result: None,
            error: Some(ApiError {
                code: code.into(),
                message: message.into(),
            }),
        }
    }
}

/// Parses one request line; a malformed line is a `bad_request` response.
pub fn parse_request(line: &str) -> Result<Request, Response> {
    if line.len() > MAX_REQUEST_BYTES {
        return Err(Response::err(
            "bad_request",
            format!(
                "request of {} bytes is over {MAX_REQUEST_BYTES}",
                line.len()
            ),
        ));
    }
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| Response::err("bad_request", e.to_string()))?;
    let request: Request = serde_json::from_value(value.clone())
        .map_err(|e| Response::err("bad_request", e.to_string()))?;
    // serde ignores unknown fields of unit variants in tagged enums; refuse them here so a
    // typo ("timeout" for "timeout_ms") is an error, not silently a default.
    let known =
        serde_json::to_value(&request).map_err(|e| Response::err("internal", e.to_string()))?;
    if let (Some(given), Some(known)) = (value.as_object(), known.as_object())
        && let Some(extra) = given.keys().find(|k| !known.contains_key(*k))
    {
        return Err(Response::err(
            "bad_request",
            format!("unknown field `{extra}`"),
        ));
    }
    Ok(request)
}

/// Blocking client: sends one request on a fresh connection and reads the response.
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> std::io::Result<Response> {
    let mut stream = UnixStream::connect(crate::socket_path::SocketPath::new(socket)?.as_path())?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer)?;
    serde_json::from_str(&answer).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "\u{0}",
        ] {
            let r = parse_request(bad).unwrap_err();
            assert!(!r.ok);
            assert_eq!(r.error.unwrap().code, "bad_request", "{bad:?}");
        }
        let huge = format!(
            r#"{{"op":"console_write","data":[{}1]}}"#,
            "1,".repeat(MAX_REQUEST_BYTES)
        );
        assert!(parse_request(&huge).is_err());
    }
}
