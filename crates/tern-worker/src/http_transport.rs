//! The agent protocol over HTTP(S): a remote agent's [`ControlPlane`]. The agent is always the
//! client; every call carries the agent's credential and the protocol version.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tern_protocol::{
    Assignment, Completion, CompletionReply, HeartbeatReply, LogChunk, PROTOCOL_VERSION,
};

use crate::transport::{ControlPlane, TransportError};

/// Header naming the protocol version of the caller.
pub const PROTOCOL_HEADER: &str = "x-tern-protocol";

/// Body of `POST /agent/v1/activate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActivateRequest {
    pub code: String,
    pub name: String,
    pub version: String,
}

/// Answer to an activation: the agent's identity and credential.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActivateReply {
    pub agent_id: i64,
    pub site: String,
    pub queues: Vec<String>,
    pub token: String,
}

/// Body of `POST /agent/v1/claim`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimRequest {
    pub wait_ms: u64,
    pub max: usize,
}

/// Body of `POST /agent/v1/heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    pub ti_id: i64,
    pub attempt: String,
}

/// The error body every agent route answers with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// Installs the ring crypto provider for rustls once per process.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn client(timeout: Duration) -> Result<reqwest::Client, TransportError> {
    install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(timeout)
        .build()
        .map_err(|e| TransportError::Unavailable(format!("cannot build the HTTP client: {e}")))
}

async fn post<B: Serialize, R: DeserializeOwned>(
    client: &reqwest::Client,
    url: String,
    token: Option<&str>,
    body: &B,
    timeout: Duration,
) -> Result<R, TransportError> {
    let mut req = client
        .post(&url)
        .header(PROTOCOL_HEADER, PROTOCOL_VERSION)
        .timeout(timeout)
        .json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| TransportError::Unavailable(format!("{url}: {e}")))?;
    let status = resp.status();
    if status.is_success() {
        return resp
            .json::<R>()
            .await
            .map_err(|e| TransportError::Unavailable(format!("{url}: unreadable answer: {e}")));
    }
    let text = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<ErrorBody>(&text)
        .map(|b| format!("{} ({})", b.message, b.code))
        .unwrap_or(text);
    if status.is_server_error() || status.as_u16() == 429 {
        Err(TransportError::Unavailable(format!(
            "{url}: {status}: {message}"
        )))
    } else {
        Err(TransportError::Refused(format!("{status}: {message}")))
    }
}

/// Exchanges a one-time activation code for the agent's credential.
pub async fn activate(
    server: &str,
    req: &ActivateRequest,
) -> Result<ActivateReply, TransportError> {
    let timeout = Duration::from_secs(30);
    let c = client(timeout)?;
    post(
        &c,
        format!("{}/agent/v1/activate", server.trim_end_matches('/')),
        None,
        req,
        timeout,
    )
    .await
}

/// A remote agent's link to the control plane.
pub struct HttpControlPlane {
    client: reqwest::Client,
    base: String,
    token: String,
    call_timeout: Duration,
}

impl HttpControlPlane {
    pub fn new(server: &str, token: &str) -> Result<HttpControlPlane, TransportError> {
        Ok(HttpControlPlane {
            client: client(Duration::from_secs(120))?,
            base: format!("{}/agent/v1", server.trim_end_matches('/')),
            token: token.to_string(),
            call_timeout: Duration::from_secs(30),
        })
    }

    async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<R, TransportError> {
        post(
            &self.client,
            format!("{}/{path}", self.base),
            Some(&self.token),
            body,
            timeout,
        )
        .await
    }
}

#[async_trait::async_trait]
impl ControlPlane for HttpControlPlane {
    async fn claim(&self, wait: Duration, max: usize) -> Result<Vec<Assignment>, TransportError> {
        let req = ClaimRequest {
            wait_ms: wait.as_millis() as u64,
            max,
        };
        self.call("claim", &req, wait + self.call_timeout).await
    }

    async fn heartbeat(&self, ti_id: i64, attempt: &str) -> Result<HeartbeatReply, TransportError> {
        let req = HeartbeatRequest {
            ti_id,
            attempt: attempt.to_string(),
        };
        self.call("heartbeat", &req, self.call_timeout).await
    }

    async fn log(&self, chunk: LogChunk) -> Result<(), TransportError> {
        let _: serde_json::Value = self.call("log", &chunk, self.call_timeout).await?;
        Ok(())
    }

    async fn complete(&self, completion: Completion) -> Result<CompletionReply, TransportError> {
        self.call("complete", &completion, self.call_timeout).await
    }
}
