//! Posting a notification to a webhook: the JSON body with the connection's headers and
//! credentials, within the notifier's deadline. A 2xx answer is delivery; 408, 429, 5xx,
//! timeouts and refused connections may pass (retried); any other answer is permanent.

use std::time::Duration;

use serde_json::Value;

use super::target::Webhook;
use super::SendError;

/// Posts `body` to `hook`.
pub async fn post(hook: &Webhook, body: &Value, timeout: Duration) -> Result<(), SendError> {
    tern_worker::http_transport::install_crypto_provider();
    let client = reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .timeout(timeout)
        // A redirect would turn the POST into a GET: point the connection at the final URL.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| SendError::Transient(format!("cannot build the HTTP client: {e}")))?;
    let mut req = client
        .post(&hook.url)
        .header("user-agent", concat!("tern/", env!("CARGO_PKG_VERSION")))
        .json(body);
    for (k, v) in &hook.headers {
        req = req.header(k, v);
    }
    if let Some((login, password)) = &hook.basic {
        req = req.basic_auth(login, password.as_deref());
    } else if let Some(token) = &hook.bearer {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.map_err(|e| {
        // The URL may hold a secret (many webhooks carry their key in the path).
        let e = e.without_url();
        let what = if e.is_timeout() {
            format!("no answer within {}", tern_core::format_duration(timeout))
        } else if e.is_builder() {
            return SendError::Permanent(format!("cannot build the request: {e}"));
        } else {
            format!("cannot reach the webhook: {}", error_chain(&e))
        };
        SendError::Transient(what)
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    let snippet: String = text.chars().take(200).collect();
    let msg = format!("the webhook answered {status}: {}", snippet.trim());
    let code = status.as_u16();
    if code == 408 || code == 429 || status.is_server_error() {
        Err(SendError::Transient(msg))
    } else {
        Err(SendError::Permanent(format!(
            "{msg} (not retried: fix the endpoint or the connection)"
        )))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
