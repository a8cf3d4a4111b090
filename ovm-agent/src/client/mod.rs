//! The manager's side: an HTTPS client of one agent, the `Hypervisor` it gives, and the
//! `Connector` that routes servers with an agent to it.

mod connector;
mod hypervisor;

pub use connector::{AgentConnector, with_agents};
pub use hypervisor::RemoteHypervisor;

use std::time::Duration;

use ovm_core::Error;
use ovm_core::model::AgentEndpoint;

use crate::protocol::{
    Call, CallRequest, CallResponse, EventBatch, Hello, Outcome, Owner, PROTOCOL, Reply,
    TakeOwnership, WireError,
};
use crate::tls::{Fingerprint, Identity};

/// How long one HTTP exchange may take before it is retried: a silent network (a cut
/// link sends no reset) must not hold a caller longer. A stop adds its grace period, an
/// event poll its wait.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts of a call whose agent does not answer, the first included.
const ATTEMPTS: u32 = 4;

/// How a call is tried.
#[derive(Debug, Clone, Copy)]
pub struct Attempts {
    /// How many times, the first included.
    pub tries: u32,
    /// How long each may take.
    pub timeout: Duration,
}

impl Attempts {
    /// The usual: [`ATTEMPTS`] tries of [`EXCHANGE_TIMEOUT`] plus what the call itself
    /// may take.
    pub fn for_call(call: &Call) -> Self {
        Attempts {
            tries: ATTEMPTS,
            timeout: EXCHANGE_TIMEOUT + Self::own_time(call),
        }
    }

    /// One short try, for an agent known not to answer: fail fast, naming the server.
    pub fn quick(call: &Call) -> Self {
        Attempts {
            tries: 1,
            timeout: Duration::from_secs(3) + Self::own_time(call),
        }
    }

    /// How long the call itself may legitimately take on the agent.
    fn own_time(call: &Call) -> Duration {
        match call {
            Call::Stop { timeout_ms, .. } => Duration::from_millis(*timeout_ms),
            _ => Duration::ZERO,
        }
    }
}

/// A client of one agent, trusting only its pinned certificate and presenting the
/// manager's.
#[derive(Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    base: String,
    /// The server it serves, for messages.
    server: String,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("base", &self.base)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl AgentClient {
    /// A client of the agent at `endpoint` for server `server`, as `identity`.
    pub fn new(
        endpoint: &AgentEndpoint,
        identity: Option<&Identity>,
        server: &str,
    ) -> ovm_core::Result<Self> {
        let bad = |why: String| Error::invalid("server.agent", why);
        let pinned: Fingerprint = endpoint
            .fingerprint
            .parse()
            .map_err(|e: crate::tls::TlsError| bad(e.to_string()))?;
        let base = endpoint.url.trim_end_matches('/').to_string();
        if !base.starts_with("https://") {
            return Err(bad(format!(
                "{base:?}: an agent is reached over https:// only"
            )));
        }
        let tls = crate::tls::client_config(pinned, identity)
            .map_err(|e| Error::backend("agent", e.to_string()))?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| Error::backend("agent", format!("HTTP client: {e}")))?;
        Ok(AgentClient {
            http,
            base,
            server: server.to_string(),
        })
    }

    /// What the agent says about itself; refuses one of another protocol major version.
    pub async fn hello(&self) -> ovm_core::Result<Hello> {
        let resp = self
            .send(
                self.http.get(format!("{}/v1/hello", self.base)),
                EXCHANGE_TIMEOUT,
            )
            .await?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| self.unreachable(e))?;
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| self.junk(status, &body))?;
        // The version first: a newer agent's hello may not decode as ours.
        let theirs = value
            .get("protocol")
            .and_then(|v| v.as_str())
            .and_then(|v| v.parse::<crate::protocol::Version>().ok());
        match theirs {
            Some(v) if PROTOCOL.compatible(v) => {}
            Some(v) => {
                return Err(Error::unsupported(
                    format!(
                        "the agent of server {} at {}: it speaks agent protocol {v}, this manager {PROTOCOL}; upgrade the older side",
                        self.server, self.base
                    ),
                    "agent",
                ));
            }
            None => return Err(self.junk(status, &body)),
        }
        serde_json::from_value(value).map_err(|_| self.junk(status, &body))
    }

    /// Makes this client's identity the agent's owner.
    pub async fn take_ownership(&self, password: &str, manager: &str) -> ovm_core::Result<Owner> {
        let body = TakeOwnership {
            password: password.to_string(),
            manager: manager.to_string(),
        };
        let resp = self
            .send(
                self.http
                    .post(format!("{}/v1/ownership", self.base))
                    .json(&body),
                EXCHANGE_TIMEOUT,
            )
            .await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| self.unreachable(e))?;
        if status == 200 {
            return serde_json::from_slice(&bytes).map_err(|_| self.junk(status, &bytes));
        }
        Err(self.refusal(status, &bytes))
    }

    /// Gives the agent up.
    pub async fn release_ownership(&self) -> ovm_core::Result<()> {
        let resp = self
            .send(
                self.http.delete(format!("{}/v1/ownership", self.base)),
                EXCHANGE_TIMEOUT,
            )
            .await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| self.unreachable(e))?;
        if status == 200 {
            Ok(())
        } else {
            Err(self.refusal(status, &bytes))
        }
    }

    /// Does one call. A call the agent did not answer is sent again with the same request
    /// id, so a state-changing one is applied once whatever happens to the connection.
    pub async fn call(&self, call: Call) -> ovm_core::Result<Reply> {
        self.call_with_id(uuid::Uuid::new_v4(), call).await
    }

    /// [`AgentClient::call`] with a request id of the caller's (a retry from above).
    pub async fn call_with_id(
        &self,
        request_id: uuid::Uuid,
        call: Call,
    ) -> ovm_core::Result<Reply> {
        let attempts = Attempts::for_call(&call);
        self.call_tried(request_id, call, attempts).await
    }

    /// A call tried as `attempts` says, with a request id of the caller's.
    pub async fn call_tried(
        &self,
        request_id: uuid::Uuid,
        call: Call,
        attempts: Attempts,
    ) -> ovm_core::Result<Reply> {
        let req = CallRequest { request_id, call };
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            match self.call_once(&req, attempts.timeout).await {
                Err(Retry(e)) if attempt < attempts.tries => {
                    tracing::debug!(server = %self.server, attempt, "agent call: {e}; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                Err(Retry(e)) => return Err(e),
                Ok(r) => return r,
            }
        }
    }

    async fn call_once(
        &self,
        req: &CallRequest,
        timeout: Duration,
    ) -> Result<ovm_core::Result<Reply>, Retry> {
        let resp = self
            .send(
                self.http.post(format!("{}/v1/call", self.base)).json(req),
                timeout,
            )
            .await
            .map_err(Retry)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| Retry(self.unreachable(e)))?;
        Ok(self.decode_call(status, &bytes))
    }

    fn decode_call(&self, status: u16, bytes: &[u8]) -> ovm_core::Result<Reply> {
        match serde_json::from_slice::<CallResponse>(bytes) {
            Ok(CallResponse { protocol, .. }) if !PROTOCOL.compatible(protocol) => {
                Err(Error::unsupported(
                    format!(
                        "the agent of server {} answers in agent protocol {protocol}, this manager speaks {PROTOCOL}",
                        self.server
                    ),
                    "agent",
                ))
            }
            Ok(CallResponse {
                outcome: Outcome::Ok(reply),
                ..
            }) => Ok(reply),
            Ok(CallResponse {
                outcome: Outcome::Error(e),
                ..
            }) => Err(e.into_error(&self.server)),
            Err(_) => Err(self.junk(status, bytes)),
        }
    }

    /// VM events after `since` of run `epoch`, waiting up to `wait` for one.
    pub async fn events(
        &self,
        epoch: &str,
        since: u64,
        wait: Duration,
    ) -> ovm_core::Result<EventBatch> {
        let req = self.http.get(format!("{}/v1/events", self.base)).query(&[
            ("epoch", epoch.to_string()),
            ("since", since.to_string()),
            ("wait_ms", wait.as_millis().to_string()),
        ]);
        // The agent answers by `wait`: a silence much longer is a dead network.
        let resp = self.send(req, wait + Duration::from_secs(3)).await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| self.unreachable(e))?;
        if status != 200 {
            return Err(self.refusal(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|_| self.junk(status, &bytes))
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> ovm_core::Result<reqwest::Response> {
        req.timeout(timeout)
            .send()
            .await
            .map_err(|e| self.unreachable(e))
    }

    fn unreachable(&self, e: reqwest::Error) -> Error {
        // The TLS refusal (wrong certificate) is deep in the source chain: say it.
        let mut why = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            why = format!("{why}: {s}");
            source = s.source();
        }
        Error::backend(
            "agent",
            format!(
                "server {} ({}) is unreachable: {why}",
                self.server, self.base
            ),
        )
    }

    fn junk(&self, status: u16, body: &[u8]) -> Error {
        let shown = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        Error::backend(
            "agent",
            format!(
                "server {} ({}) answered {status} with something that is not the agent protocol: {shown:?}",
                self.server, self.base
            ),
        )
    }

    fn refusal(&self, status: u16, body: &[u8]) -> Error {
        match serde_json::from_slice::<CallResponse>(body) {
            Ok(CallResponse {
                outcome: Outcome::Error(WireError::Refused { message, .. }),
                ..
            }) => Error::backend(
                "agent",
                format!(
                    "the agent of server {} refused ({status}): {message}",
                    self.server
                ),
            ),
            Ok(CallResponse {
                outcome: Outcome::Error(e),
                ..
            }) => e.into_error(&self.server),
            _ => self.junk(status, body),
        }
    }
}

/// True for the error of an agent that did not answer at all (as opposed to one that
/// answered with a refusal or an error of its hypervisor).
pub fn is_unreachable(e: &Error) -> bool {
    matches!(e, Error::Backend { backend, message, .. }
        if backend == "agent" && message.contains(UNREACHABLE))
}

/// What [`AgentClient`] says of an agent that does not answer.
const UNREACHABLE: &str = "is unreachable";

/// A failure worth another attempt: the agent did not answer.
struct Retry(Error);
