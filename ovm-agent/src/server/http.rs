//! The HTTPS side: TLS accept loop, limits, routes.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::Shared;
use super::journal::Admission;
use crate::protocol::{
    CallRequest, CallResponse, MAX_BODY, MAX_EVENT_WAIT, Outcome, PROTOCOL, TakeOwnership,
    WireError,
};
use crate::tls::{Fingerprint, peer_fingerprint};

/// How long a client may take.
#[derive(Clone, Copy)]
pub(super) struct Limits {
    /// A whole request, an event poll's wait included.
    pub request: Duration,
    /// The TLS handshake, and a request's headers.
    pub handshake: Duration,
}

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 512;

/// The client certificate of the connection a request came on.
#[derive(Clone, Copy)]
struct Peer(Option<Fingerprint>);

pub(super) async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
    limits: Limits,
    cancel: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let app = router(shared, limits.request);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, remote) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (acceptor, app, cancel) = (acceptor.clone(), app.clone(), cancel.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, "TLS handshake refused: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let peer = Peer(peer_fingerprint(tls.get_ref().1));
            let svc = app.map_request(
                move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(peer);
                    req
                },
            );
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.handshake)
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(svc));
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r {
                    tracing::debug!(%remote, "connection: {e}");
                },
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
}

fn router(shared: Arc<Shared>, request_timeout: Duration) -> Router {
    Router::new()
        .route("/v1/hello", get(hello))
        .route(
            "/v1/ownership",
            post(take_ownership).delete(release_ownership),
        )
        .route("/v1/call", post(call))
        .route("/v1/events", get(events))
        .fallback(|| async { refusal(404, "no such endpoint (see docs/agent-protocol.md)".into()) })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(
            move |req, next: axum::middleware::Next| async move {
                match tokio::time::timeout(request_timeout, next.run(req)).await {
                    Ok(resp) => resp,
                    Err(_) => refusal(
                        503,
                        format!("request took over {} s", request_timeout.as_secs()),
                    ),
                }
            },
        ))
        .with_state(shared)
}

fn json<T: serde::Serialize>(status: u16, body: &T) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn outcome(o: Outcome) -> Response {
    let status = match &o {
        Outcome::Ok(_) => 200,
        Outcome::Error(e) => e.status(),
    };
    json(
        status,
        &CallResponse {
            protocol: PROTOCOL,
            outcome: o,
        },
    )
}

fn refusal(status: u16, message: String) -> Response {
    outcome(Outcome::Error(WireError::Refused { status, message }))
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| refusal(400, format!("malformed request: {e}")))
}

async fn hello(State(s): State<Arc<Shared>>) -> Response {
    json(200, &s.hello())
}

async fn take_ownership(
    State(s): State<Arc<Shared>>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    body: Bytes,
) -> Response {
    let req: TakeOwnership = match decode(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match s.ownership.take(peer, &req.manager, &req.password).await {
        Ok(owner) => {
            tracing::info!(manager = %owner.name, fingerprint = %owner.fingerprint, "ownership taken");
            json(200, &owner)
        }
        Err(e) => outcome(Outcome::Error(e)),
    }
}

async fn release_ownership(
    State(s): State<Arc<Shared>>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
) -> Response {
    match s.ownership.release(peer) {
        Ok(()) => {
            tracing::info!("ownership released");
            outcome(Outcome::Ok(crate::protocol::Reply::Done))
        }
        Err(e) => outcome(Outcome::Error(e)),
    }
}

async fn call(
    State(s): State<Arc<Shared>>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    body: Bytes,
) -> Response {
    if let Err(e) = s.ownership.check(peer) {
        return outcome(Outcome::Error(e));
    }
    let req: CallRequest = match decode(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if let Err(e) = super::calls::validate(&req.call, &s.allowed_paths) {
        return outcome(Outcome::Error(e));
    }
    let op = req.call.name();
    if !req.call.changes_state() {
        return outcome(super::calls::run(&*s.hv, req.call).await);
    }
    match s.journal.admit(req.request_id, op).await {
        Err(e) => outcome(Outcome::Error(e)),
        Ok(Admission::Answered(o)) => outcome(o),
        Ok(Admission::Run) => {
            // Run to the end even if the caller goes away: its retry gets this outcome.
            let (shared, id) = (s.clone(), req.request_id);
            let task = tokio::spawn(async move {
                let o = super::calls::run(&*shared.hv, req.call).await;
                shared.journal.finish(id, op, &o);
                o
            });
            match task.await {
                Ok(o) => outcome(o),
                Err(e) => refusal(500, format!("{op} failed inside the agent: {e}")),
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventQuery {
    #[serde(default)]
    epoch: String,
    #[serde(default)]
    since: u64,
    #[serde(default)]
    wait_ms: u64,
}

async fn events(
    State(s): State<Arc<Shared>>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    query: Result<Query<EventQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(e) = s.ownership.check(peer) {
        return outcome(Outcome::Error(e));
    }
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return refusal(400, format!("malformed query: {e}")),
    };
    let wait = Duration::from_millis(q.wait_ms).min(MAX_EVENT_WAIT);
    json(200, &s.events.read(&q.epoch, q.since, wait).await)
}
