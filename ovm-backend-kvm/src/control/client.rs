//! The one client of the control protocol. It is async (the driver runs on tokio);
//! [`BlockingClient`] drives the same client on a runtime of its own for code without
//! one (benchmarks, tools). Every answer's protocol version is checked before anything
//! else in it is read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::protocol::{
    ControlError, PROTOCOL_VERSION, ProtocolVersion, Reply, Request, Response, VmmStatus,
};
use crate::vmm::{ExitReason, VmmStats};

/// How long a call waits for its answer unless told otherwise.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Lines of a VMM's output: a child's standard output or an `events` subscription.
pub type EventLines = tokio::io::Lines<Box<dyn AsyncBufRead + Send + Unpin>>;

/// Why a call failed. `peer` says which VMM: its VM (when known) and socket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket could not be reached or the connection broke.
    #[error("{peer}: {source}")]
    Io {
        /// Which VMM.
        peer: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("{peer} did not answer `{op}` within {after:?}")]
    Timeout {
        /// Which VMM.
        peer: String,
        /// The request.
        op: &'static str,
        /// How long was waited.
        after: Duration,
    },
    /// The connection closed before an answer came.
    #[error("{peer} closed the connection without answering `{op}`")]
    Closed {
        /// Which VMM.
        peer: String,
        /// The request.
        op: &'static str,
    },
    /// The VMM speaks another major version of the protocol (or none at all).
    #[error(
        "{peer} speaks control protocol {}, this driver speaks {ours}: a different major version is refused",
        describe_version(.theirs)
    )]
    VersionMismatch {
        /// Which VMM.
        peer: String,
        /// The version this side speaks.
        ours: ProtocolVersion,
        /// The version the VMM says it speaks; `None` when it says none.
        theirs: Option<ProtocolVersion>,
    },
    /// The answer is not a control response.
    #[error(
        "{peer} answered `{op}` with something that is not a control response ({reason}): {answer:?}"
    )]
    Junk {
        /// Which VMM.
        peer: String,
        /// The request.
        op: &'static str,
        /// What came back (cut to 200 bytes).
        answer: String,
        /// Why it was not understood.
        reason: String,
    },
    /// The VMM refused the request.
    #[error("{peer} refused `{op}`: {error}")]
    Refused {
        /// Which VMM.
        peer: String,
        /// The request.
        op: &'static str,
        /// Its error.
        error: ControlError,
    },
    /// A reply of another kind than the request gets.
    #[error("{peer} answered `{op}` with a `{reply}` reply")]
    UnexpectedReply {
        /// Which VMM.
        peer: String,
        /// The request.
        op: &'static str,
        /// The reply's kind.
        reply: &'static str,
    },
}

fn describe_version(v: &Option<ProtocolVersion>) -> String {
    match v {
        Some(v) => v.to_string(),
        None => "no version (it predates versioning)".into(),
    }
}

impl ClientError {
    /// The I/O error's kind, for an `Io` error.
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            ClientError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

/// Where a VMM's control socket is, whom it serves, and how long calls wait.
#[derive(Debug, Clone)]
pub struct ControlClient {
    socket: PathBuf,
    vm: Option<String>,
    timeout: Duration,
}

impl ControlClient {
    /// A client of the VMM listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        ControlClient {
            socket: socket.into(),
            vm: None,
            timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    /// Names the VM, for error messages.
    pub fn for_vm(mut self, vm: impl ToString) -> Self {
        self.vm = Some(vm.to_string());
        self
    }

    /// Calls wait `timeout` for their answer (connecting included).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Which VMM this is, for messages.
    pub fn peer(&self) -> String {
        match &self.vm {
            Some(vm) => format!("ovm-vmm of vm {vm} at {}", self.socket.display()),
            None => format!("ovm-vmm at {}", self.socket.display()),
        }
    }

    fn io(&self, source: std::io::Error) -> ClientError {
        ClientError::Io {
            peer: self.peer(),
            source,
        }
    }

    /// Refuses a VMM that says it speaks `theirs` unless the major versions agree.
    pub fn check_version(&self, theirs: Option<ProtocolVersion>) -> Result<(), ClientError> {
        match theirs {
            Some(v) if PROTOCOL_VERSION.compatible_with(v) => Ok(()),
            theirs => Err(ClientError::VersionMismatch {
                peer: self.peer(),
                ours: PROTOCOL_VERSION,
                theirs,
            }),
        }
    }

    /// Connects (however deep the socket's directory is).
    pub async fn connect(&self) -> Result<Connection, ClientError> {
        let stream = async {
            let at = crate::socket_path::SocketPath::new(&self.socket)?;
            UnixStream::connect(at.as_path()).await
        }
        .await
        .map_err(|e| self.io(e))?;
        Ok(Connection {
            io: BufReader::new(stream),
            client: self.clone(),
        })
    }

    /// Sends `request` on a fresh connection and returns the reply.
    pub async fn call(&self, request: &Request) -> Result<Reply, ClientError> {
        let exchange = async {
            let mut connection = self.connect().await?;
            connection.exchange(request).await
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| self.timed_out(request))?
    }

    fn timed_out(&self, request: &Request) -> ClientError {
        ClientError::Timeout {
            peer: self.peer(),
            op: request.op(),
            after: self.timeout,
        }
    }

    fn unexpected(&self, request: &Request, reply: &Reply) -> ClientError {
        ClientError::UnexpectedReply {
            peer: self.peer(),
            op: request.op(),
            reply: reply.kind(),
        }
    }

    /// Sends a request whose reply is `done` (start, pause, resume, kill, guest_send,
    /// shutdown).
    pub async fn done(&self, request: Request) -> Result<(), ClientError> {
        match self.call(&request).await? {
            Reply::Done => Ok(()),
            other => Err(self.unexpected(&request, &other)),
        }
    }

    /// `stop`: how the VM ended.
    pub async fn stop(&self, timeout: Duration) -> Result<ExitReason, ClientError> {
        let request = Request::Stop {
            timeout_ms: timeout.as_millis() as u64,
        };
        match self.call(&request).await? {
            Reply::Stopped(reason) => Ok(reason),
            other => Err(self.unexpected(&request, &other)),
        }
    }

    /// `state`.
    pub async fn state(&self) -> Result<VmmStatus, ClientError> {
        match self.call(&Request::State).await? {
            Reply::State(status) => Ok(status),
            other => Err(self.unexpected(&Request::State, &other)),
        }
    }

    /// `stats`.
    pub async fn stats(&self) -> Result<VmmStats, ClientError> {
        match self.call(&Request::Stats).await? {
            Reply::Stats(stats) => Ok(stats),
            other => Err(self.unexpected(&Request::Stats, &other)),
        }
    }

    /// `console`: the console ring buffer.
    pub async fn console(&self) -> Result<Vec<u8>, ClientError> {
        match self.call(&Request::Console).await? {
            Reply::Console(bytes) => Ok(bytes),
            other => Err(self.unexpected(&Request::Console, &other)),
        }
    }

    /// `console_write`: how many bytes were taken.
    pub async fn console_write(&self, data: &[u8]) -> Result<usize, ClientError> {
        let request = Request::ConsoleWrite {
            data: data.to_vec(),
        };
        match self.call(&request).await? {
            Reply::ConsoleInput { taken } => Ok(taken),
            other => Err(self.unexpected(&request, &other)),
        }
    }

    /// `guest_read`.
    pub async fn guest_read(&self, key: &str) -> Result<Option<Vec<u8>>, ClientError> {
        let request = Request::GuestRead { key: key.into() };
        match self.call(&request).await? {
            Reply::GuestValue(value) => Ok(value),
            other => Err(self.unexpected(&request, &other)),
        }
    }
}

/// One connection to a VMM: any number of requests, in turn, or one `events`
/// subscription.
pub struct Connection {
    io: BufReader<UnixStream>,
    client: ControlClient,
}

impl Connection {
    /// The process at the other end, as the kernel saw it connect.
    pub fn peer_pid(&self) -> Result<Option<u32>, ClientError> {
        let cred = self
            .io
            .get_ref()
            .peer_cred()
            .map_err(|e| self.client.io(e))?;
        Ok(cred.pid().and_then(|p| u32::try_from(p).ok()))
    }

    /// Sends `request` and returns the reply (within the client's timeout).
    pub async fn call(&mut self, request: &Request) -> Result<Reply, ClientError> {
        let timeout = self.client.timeout;
        tokio::time::timeout(timeout, self.exchange(request))
            .await
            .map_err(|_| self.client.timed_out(request))?
    }

    async fn exchange(&mut self, request: &Request) -> Result<Reply, ClientError> {
        let mut line = serde_json::to_vec(request).map_err(|e| self.client.io(e.into()))?;
        line.push(b'\n');
        self.io
            .write_all(&line)
            .await
            .map_err(|e| self.client.io(e))?;
        let mut answer = String::new();
        self.io
            .read_line(&mut answer)
            .await
            .map_err(|e| self.client.io(e))?;
        self.decode(request, &answer)
    }

    /// Reads one response line: the version first, then the rest.
    fn decode(&self, request: &Request, answer: &str) -> Result<Reply, ClientError> {
        let op = request.op();
        if answer.is_empty() {
            return Err(ClientError::Closed {
                peer: self.client.peer(),
                op,
            });
        }
        let junk = |reason: String| ClientError::Junk {
            peer: self.client.peer(),
            op,
            answer: answer.trim_end().chars().take(200).collect(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_str(answer).map_err(|e| junk(e.to_string()))?;
        let Some(fields) = value.as_object() else {
            return Err(junk("not a JSON object".into()));
        };
        let theirs = match fields.get("protocol") {
            None => None,
            Some(v) => Some(
                serde_json::from_value::<ProtocolVersion>(v.clone())
                    .map_err(|e| junk(e.to_string()))?,
            ),
        };
        self.client.check_version(theirs)?;
        let response: Response = serde_json::from_value(value).map_err(|e| junk(e.to_string()))?;
        response.outcome.map_err(|error| ClientError::Refused {
            peer: self.client.peer(),
            op,
            error,
        })
    }

    /// Subscribes to the VMM's events: returns its event lines once it has said yes.
    pub async fn subscribe(mut self) -> Result<EventLines, ClientError> {
        match self.call(&Request::Events).await? {
            Reply::Subscribed => {
                let io: Box<dyn AsyncBufRead + Send + Unpin> = Box::new(self.io);
                Ok(io.lines())
            }
            other => Err(self.client.unexpected(&Request::Events, &other)),
        }
    }
}

/// The same client, for code that runs no tokio runtime: each call runs on a
/// current-thread runtime owned by this value. Not for use inside a runtime.
pub struct BlockingClient {
    runtime: tokio::runtime::Runtime,
    client: ControlClient,
}

impl BlockingClient {
    /// Wraps `client`.
    pub fn new(client: ControlClient) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(BlockingClient { runtime, client })
    }

    /// [`ControlClient::call`], waited for.
    pub fn call(&self, request: &Request) -> Result<Reply, ClientError> {
        self.runtime.block_on(self.client.call(request))
    }

    /// [`ControlClient::done`], waited for.
    pub fn done(&self, request: Request) -> Result<(), ClientError> {
        self.runtime.block_on(self.client.done(request))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader as StdBufReader, Write};
    use std::os::unix::net::UnixListener;

    use super::*;
    use crate::control::protocol::{ErrorCode, parse_request};

    /// A fake VMM on a socket in a temporary directory: answers each request line with the
    /// next of `answers` (`None`: close without answering), and hands back the requests it
    /// read once the client is gone.
    fn fake_vmm(
        answers: Vec<Option<&'static str>>,
    ) -> (
        tempfile::TempDir,
        PathBuf,
        std::thread::JoinHandle<Vec<Request>>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for answer in answers {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = StdBufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                seen.push(parse_request(line.trim_end()).expect("the client's request parses"));
                if let Some(answer) = answer {
                    let mut writer = stream;
                    writer.write_all(answer.as_bytes()).unwrap();
                    writer.write_all(b"\n").unwrap();
                    // Hold the connection until the client has read and gone.
                    let _ = reader.read_line(&mut line);
                }
            }
            seen
        });
        (dir, socket, server)
    }

    fn client(socket: &Path) -> ControlClient {
        ControlClient::new(socket)
            .for_vm("test-vm")
            .with_timeout(Duration::from_secs(5))
    }

    #[tokio::test]
    async fn a_vmm_of_another_major_version_is_refused_naming_both_versions_and_the_vm() {
        let (_dir, socket, server) = fake_vmm(vec![
            Some(r#"{"protocol":"2.0","ok":true,"result":{"type":"done"}}"#),
            Some(r#"{"protocol":"2.0","ok":true,"result":{"type":"subscribed"}}"#),
        ]);
        let c = client(&socket);
        let e = c.done(Request::Pause).await.unwrap_err();
        match &e {
            ClientError::VersionMismatch { ours, theirs, .. } => {
                assert_eq!(*ours, PROTOCOL_VERSION);
                assert_eq!(theirs.map(|v| v.major), Some(2));
            }
            other => panic!("{other:?}"),
        }
        let text = e.to_string();
        for part in ["vm test-vm", "api.sock", "protocol 2.0", "speaks 1.0"] {
            assert!(text.contains(part), "{part:?} in {text}");
        }
        let e = c.connect().await.unwrap().subscribe().await.err().unwrap();
        assert!(matches!(e, ClientError::VersionMismatch { .. }), "{e}");
        assert_eq!(server.join().unwrap(), [Request::Pause, Request::Events]);
    }

    #[tokio::test]
    async fn a_vmm_that_states_no_version_is_refused() {
        let (_dir, socket, server) = fake_vmm(vec![Some(r#"{"ok":true}"#)]);
        let e = client(&socket).done(Request::Resume).await.unwrap_err();
        assert!(
            matches!(e, ClientError::VersionMismatch { theirs: None, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("predates versioning"), "{e}");
        server.join().unwrap();
    }

    #[tokio::test]
    async fn junk_answers_are_refused_with_what_came_back() {
        let (_dir, socket, server) = fake_vmm(vec![
            Some("hello there"),
            Some("[1,2,3]"),
            Some(r#"{"protocol":"x","ok":true,"result":{"type":"done"}}"#),
            Some(r#"{"protocol":"1.0","ok":true,"result":{"type":"teleported"}}"#),
            Some(r#"{"protocol":"1.0","ok":true}"#),
            None,
        ]);
        let c = client(&socket);
        for expected in [
            "hello there",
            "[1,2,3]",
            "\"x\"",
            "teleported",
            "needs a `result`",
        ] {
            let e = c.state().await.unwrap_err();
            assert!(matches!(e, ClientError::Junk { .. }), "{e:?}");
            assert!(e.to_string().contains(expected), "{expected:?} in {e}");
        }
        let e = c.state().await.unwrap_err();
        assert!(
            matches!(e, ClientError::Closed { op: "state", .. }),
            "{e:?}"
        );
        server.join().unwrap();
    }

    #[tokio::test]
    async fn newer_minor_versions_are_understood_and_errors_and_kinds_are_typed() {
        let (_dir, socket, server) = fake_vmm(vec![
            Some(r#"{"protocol":"1.9","ok":true,"result":{"type":"console","data":[104,105]}}"#),
            Some(
                r#"{"protocol":"1.0","ok":false,"error":{"code":"invalid_state","message":"VM is created: cannot pause"}}"#,
            ),
            Some(r#"{"protocol":"1.0","ok":true,"result":{"type":"done"}}"#),
        ]);
        let c = client(&socket);
        assert_eq!(c.console().await.unwrap(), b"hi");
        match c.done(Request::Pause).await.unwrap_err() {
            ClientError::Refused { error, op, .. } => {
                assert_eq!(op, "pause");
                assert_eq!(error.code, ErrorCode::InvalidState);
                assert_eq!(error.message, "VM is created: cannot pause");
            }
            other => panic!("{other:?}"),
        }
        let e = c.stats().await.unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::UnexpectedReply {
                    op: "stats",
                    reply: "done",
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            server.join().unwrap(),
            [Request::Console, Request::Pause, Request::Stats]
        );
    }

    #[tokio::test]
    async fn a_silent_vmm_times_out_and_a_missing_one_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let _listener = UnixListener::bind(&socket).unwrap();
        let c = client(&socket).with_timeout(Duration::from_millis(100));
        let e = c.state().await.unwrap_err();
        assert!(
            matches!(e, ClientError::Timeout { op: "state", .. }),
            "{e:?}"
        );
        let gone = client(&dir.path().join("none.sock"));
        let e = gone.state().await.unwrap_err();
        assert_eq!(e.io_kind(), Some(std::io::ErrorKind::NotFound), "{e:?}");
    }

    #[test]
    fn the_blocking_client_drives_the_same_checks() {
        let (_dir, socket, server) = fake_vmm(vec![
            Some(r#"{"protocol":"1.0","ok":true,"result":{"type":"done"}}"#),
            Some(r#"{"protocol":"0.3","ok":true,"result":{"type":"done"}}"#),
        ]);
        let c = BlockingClient::new(client(&socket)).unwrap();
        c.done(Request::Pause).unwrap();
        let e = c.call(&Request::Resume).unwrap_err();
        assert!(matches!(e, ClientError::VersionMismatch { .. }), "{e:?}");
        assert_eq!(server.join().unwrap(), [Request::Pause, Request::Resume]);
    }
}
