//! The agent protocol over HTTP(S): a remote agent's [`ControlPlane`]. The agent is always the
//! client; every call carries the agent's credential and the protocol version.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tern_protocol::{
    Assignment, Completion, CompletionReply, HeartbeatReply, LogChunk, Report, ReportReply,
    PROTOCOL_VERSION,
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

fn client(timeout: Duration, ca_pem: Option<&[u8]>) -> Result<reqwest::Client, TransportError> {
    install_crypto_provider();
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(timeout);
    if let Some(pem) = ca_pem {
        let cert = reqwest::Certificate::from_pem(pem).map_err(|e| {
            TransportError::Refused(format!("the CA certificate is not valid PEM: {e}"))
        })?;
        b = b.add_root_certificate(cert);
    }
    b.build()
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
    if status == reqwest::StatusCode::UNAUTHORIZED && token.is_some() {
        return Err(TransportError::Revoked(format!("{status}: {message}")));
    }
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
    ca_pem: Option<&[u8]>,
) -> Result<ActivateReply, TransportError> {
    let timeout = Duration::from_secs(30);
    let c = client(timeout, ca_pem)?;
    post(
        &c,
        format!("{}/agent/v1/activate", server.trim_end_matches('/')),
        None,
        req,
        timeout,
    )
    .await
}

/// A remote agent's link to the control plane. Given several server URLs (servers sharing
/// one PostgreSQL database), it moves to the next one when a call cannot reach the current.
pub struct HttpControlPlane {
    client: reqwest::Client,
    bases: Vec<String>,
    current: std::sync::atomic::AtomicUsize,
    token: String,
    call_timeout: Duration,
}

impl HttpControlPlane {
    pub fn new(server: &str, token: &str) -> Result<HttpControlPlane, TransportError> {
        Self::with_servers(&[server.to_string()], token, Duration::from_secs(30), None)
    }

    /// A link to any of `servers`; each call (except a claim's wait) must answer within
    /// `call_timeout`.
    pub fn with_servers(
        servers: &[String],
        token: &str,
        call_timeout: Duration,
        ca_pem: Option<&[u8]>,
    ) -> Result<HttpControlPlane, TransportError> {
        if servers.is_empty() {
            return Err(TransportError::Refused("no control plane URL given".into()));
        }
        Ok(HttpControlPlane {
            client: client(Duration::from_secs(120), ca_pem)?,
            bases: servers
                .iter()
                .map(|s| format!("{}/agent/v1", s.trim_end_matches('/')))
                .collect(),
            current: std::sync::atomic::AtomicUsize::new(0),
            token: token.to_string(),
            call_timeout,
        })
    }

    async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<R, TransportError> {
        use std::sync::atomic::Ordering;
        let i = self.current.load(Ordering::SeqCst);
        let result = post(
            &self.client,
            format!("{}/{path}", self.bases[i % self.bases.len()]),
            Some(&self.token),
            body,
            timeout,
        )
        .await;
        if matches!(result, Err(TransportError::Unavailable(_))) && self.bases.len() > 1 {
            // Try the next server on the following call; another call may have moved on already.
            let _ = self
                .current
                .compare_exchange(i, i + 1, Ordering::SeqCst, Ordering::SeqCst);
        }
        result
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

    async fn report(&self, report: Report) -> Result<ReportReply, TransportError> {
        self.call("report", &report, self.call_timeout).await
    }
}
