//! The agent gateway over HTTP: `/agent/v1/*`. Remote agents activate with a one-time code,
//! then claim (long-poll), heartbeat, send log chunks and results with their credential.
//!
//! Architecture invariant: the queues an agent is served come from its record in the store
//! (set by the activation code), never from the request.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use tern_protocol::{Completion, LogChunk, Report, ReportReply, PROTOCOL_VERSION};
use tern_store::agents::AgentRow;
use tern_store::StoreError;
use tern_worker::http_transport::{
    ActivateReply, ActivateRequest, ClaimRequest, ErrorBody, HeartbeatRequest, PROTOCOL_HEADER,
};
use tern_worker::{ControlPlane, TransportError};

use crate::gateway::Gateway;

/// Longest a claim may wait before answering with no work.
const MAX_CLAIM_WAIT: Duration = Duration::from_secs(30);

/// An error answered to an agent: a status and `{code, message}`; never an internal detail.
pub struct AgentError(StatusCode, &'static str, String);

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(ErrorBody {
                code: self.1.to_string(),
                message: self.2,
            }),
        )
            .into_response()
    }
}

impl From<StoreError> for AgentError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => AgentError(StatusCode::NOT_FOUND, "not_found", m),
            StoreError::Conflict(m) => AgentError(StatusCode::CONFLICT, "conflict", m),
            StoreError::Invalid(m) => AgentError(StatusCode::BAD_REQUEST, "invalid", m),
            StoreError::Revoked(m) => AgentError(StatusCode::UNAUTHORIZED, "unauthenticated", m),
            other => {
                tracing::error!("agent gateway: {other}");
                AgentError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the control plane cannot reach its database; retry later".into(),
                )
            }
        }
    }
}

impl From<TransportError> for AgentError {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Refused(m) => AgentError(StatusCode::CONFLICT, "refused", m),
            TransportError::Revoked(m) => {
                AgentError(StatusCode::UNAUTHORIZED, "unauthenticated", m)
            }
            TransportError::Unavailable(m) => {
                tracing::error!("agent gateway: {m}");
                AgentError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the control plane is unavailable; retry later".into(),
                )
            }
        }
    }
}

pub fn router(gw: Gateway) -> Router {
    Router::new()
        .route("/agent/v1/activate", post(activate))
        .route("/agent/v1/claim", post(claim))
        .route("/agent/v1/heartbeat", post(heartbeat))
        .route("/agent/v1/log", post(log))
        .route("/agent/v1/complete", post(complete))
        .route("/agent/v1/report", post(report))
        .with_state(gw)
}

/// Accepts callers of the same major protocol version (minor versions are compatible).
fn check_version(headers: &HeaderMap) -> Result<(), AgentError> {
    let theirs = headers
        .get(PROTOCOL_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let major = |v: &str| v.split('.').next().unwrap_or("").to_string();
    if major(theirs) != major(PROTOCOL_VERSION) {
        return Err(AgentError(
            StatusCode::BAD_REQUEST,
            "protocol_version",
            format!("agent protocol {theirs:?} is not compatible with this control plane's; upgrade the agent (or the server) to the same tern release"),
        ));
    }
    Ok(())
}

/// The calling agent, from its credential (checked first: an anonymous caller learns nothing,
/// not even the protocol version), then its protocol version.
async fn authenticate(
    gw: &Gateway,
    headers: &HeaderMap,
    addr: SocketAddr,
) -> Result<AgentRow, AgentError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            AgentError(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "missing agent credential".into(),
            )
        })?;
    let agent = gw
        .store
        .authenticate_agent(token, &addr.ip().to_string())
        .await?
        .ok_or_else(|| {
            AgentError(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "unknown or revoked agent credential; activate the agent again with a new code"
                    .into(),
            )
        })?;
    check_version(headers)?;
    Ok(agent)
}

/// A request body, read only after the caller is known.
fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, AgentError> {
    b.map(|Json(v)| v)
        .map_err(|e| AgentError(StatusCode::BAD_REQUEST, "invalid", e.body_text()))
}

fn control_plane(gw: &Gateway, agent: &AgentRow) -> crate::gateway::LocalControlPlane {
    gw.for_remote_agent(agent.id, agent.queues.clone())
}

async fn activate(
    State(gw): State<Gateway>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(req): Json<ActivateRequest>,
) -> Result<Json<ActivateReply>, AgentError> {
    check_version(&headers)?;
    let a = gw
        .store
        .activate(&req.code, &req.name, &req.version, &addr.ip().to_string())
        .await?;
    tracing::info!(agent = a.agent.id, site = %a.agent.site, "agent activated");
    Ok(Json(ActivateReply {
        agent_id: a.agent.id,
        site: a.agent.site,
        queues: a.agent.queues,
        token: a.token,
    }))
}

async fn claim(
    State(gw): State<Gateway>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    req: Result<Json<ClaimRequest>, JsonRejection>,
) -> Result<Json<Vec<tern_protocol::Assignment>>, AgentError> {
    let agent = authenticate(&gw, &headers, addr).await?;
    let req = body(req)?;
    let _polling = gw.polling(agent.id);
    let wait = Duration::from_millis(req.wait_ms).min(MAX_CLAIM_WAIT);
    let got = control_plane(&gw, &agent)
        .claim(wait, req.max.clamp(1, 256))
        .await?;
    Ok(Json(got))
}

async fn heartbeat(
    State(gw): State<Gateway>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    req: Result<Json<HeartbeatRequest>, JsonRejection>,
) -> Result<Json<tern_protocol::HeartbeatReply>, AgentError> {
    let agent = authenticate(&gw, &headers, addr).await?;
    let req = body(req)?;
    Ok(Json(
        control_plane(&gw, &agent)
            .heartbeat(req.ti_id, &req.attempt)
            .await?,
    ))
}

async fn log(
    State(gw): State<Gateway>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    chunk: Result<Json<LogChunk>, JsonRejection>,
) -> Result<Json<serde_json::Value>, AgentError> {
    let agent = authenticate(&gw, &headers, addr).await?;
    control_plane(&gw, &agent).log(body(chunk)?).await?;
    Ok(Json(serde_json::json!({})))
}

async fn complete(
    State(gw): State<Gateway>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    c: Result<Json<Completion>, JsonRejection>,
) -> Result<Json<tern_protocol::CompletionReply>, AgentError> {
    let agent = authenticate(&gw, &headers, addr).await?;
    Ok(Json(control_plane(&gw, &agent).complete(body(c)?).await?))
}

async fn report(
    State(gw): State<Gateway>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    r: Result<Json<Report>, JsonRejection>,
) -> Result<Json<ReportReply>, AgentError> {
    let agent = authenticate(&gw, &headers, addr).await?;
    let r = body(r)?;
    let held = r.held.len();
    let reply = control_plane(&gw, &agent).report(r).await?;
    tracing::info!(
        agent = agent.id,
        site = %agent.site,
        held,
        current = reply.current.len(),
        "agent reported"
    );
    Ok(Json(reply))
}
