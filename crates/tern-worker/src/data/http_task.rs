//! The `http` task: one request, templated, with a connection's base URL and credentials;
//! success by expected status; the response's status and (capped) body become outputs. A 4xx
//! answer other than 408 and 429 cannot succeed on retry; 5xx, 408, 429 and network errors can.

use std::time::Duration;

use serde_json::{Map, Value};

use tern_core::HttpTask;

use super::error::DataError;
use super::{connection, render};
use crate::connections::Connections;
use crate::logsink::LogSink;
use crate::template::Renderer;

/// Longest wait for an answer (the task's `execution_timeout` bounds the whole task).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether `status` counts as success: one of `expected`, or any 2xx when it is empty.
pub(crate) fn status_expected(status: u16, expected: &[u16]) -> bool {
    if expected.is_empty() {
        (200..300).contains(&status)
    } else {
        expected.contains(&status)
    }
}

/// A request ready to send, with what the log names.
pub(crate) struct Prepared {
    pub req: reqwest::RequestBuilder,
    pub method: reqwest::Method,
    pub url: String,
}

/// Builds a request: the URL rendered and, when relative, joined to the connection's base URL;
/// headers rendered; the connection's credentials (login/password: basic; extra `token`:
/// bearer) attached; every call bounded by a timeout.
pub(crate) fn prepare(
    conns: &Connections,
    r: &Renderer,
    url: &str,
    conn: Option<&str>,
    method: &str,
    headers: &std::collections::BTreeMap<String, String>,
) -> Result<Prepared, DataError> {
    crate::http_transport::install_crypto_provider();
    let mut url = render(r, "url", url)?;
    let conn = conn.map(|name| connection(conns, name)).transpose()?;
    if let Some(c) = conn {
        if !url.starts_with("http://") && !url.starts_with("https://") {
            let mut base = url::Url::parse(&c.uri)
                .map_err(|e| DataError::permanent(format!("connection {:?}: {e}", c.name)))?;
            let _ = base.set_username("");
            let _ = base.set_password(None);
            url = format!(
                "{}/{}",
                base.as_str().trim_end_matches('/'),
                url.trim_start_matches('/')
            );
        }
    }
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|_| DataError::permanent(format!("bad method {method:?}")))?;
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| DataError::transient(format!("cannot build the HTTP client: {e}")))?;
    let mut req = client.request(method.clone(), &url);
    for (k, v) in headers {
        req = req.header(k, render(r, &format!("headers[{k:?}]"), v)?);
    }
    if let Some(c) = conn {
        if let Some(login) = &c.login {
            req = req.basic_auth(login, c.password.as_deref());
        } else if let Some(Value::String(token)) = c.extra.get("token") {
            req = req.bearer_auth(token);
        }
    }
    Ok(Prepared { req, method, url })
}

pub async fn run_http(
    conns: &Connections,
    r: &Renderer,
    sink: &dyn LogSink,
    spec: &HttpTask,
) -> Result<Map<String, Value>, DataError> {
    let Prepared {
        mut req,
        method,
        url,
    } = prepare(
        conns,
        r,
        &spec.url,
        spec.conn.as_deref(),
        &spec.method,
        &spec.headers,
    )?;
    if let Some(b) = &spec.body {
        req = req.body(render(r, "body", b)?);
    }
    sink.line(&format!("tern: {method} {url}"));
    let resp = req.send().await.map_err(|e| {
        DataError::transient(format!(
            "{method} {url} failed: {}",
            super::error::error_chain(&e)
        ))
    })?;
    let status = resp.status().as_u16();
    sink.line(&format!("tern: answered {}", resp.status()));
    if !status_expected(status, &spec.expected_status) {
        let message = format!(
            "{method} {url} answered {status}, expected {}",
            if spec.expected_status.is_empty() {
                "2xx".to_string()
            } else {
                format!("{:?}", spec.expected_status)
            }
        );
        let retryable = status >= 500 || status == 408 || status == 429 || status < 400;
        return Err(DataError { message, retryable });
    }
    if let Some(target_conn) = &spec.save_to_conn {
        let path = render(r, "save_to", spec.save_to.as_deref().unwrap_or_default())?;
        return save_body(conns, sink, resp, status, target_conn, &path).await;
    }
    let mut body = Vec::new();
    let mut truncated = false;
    let mut resp = resp;
    while let Some(chunk) = resp.chunk().await.map_err(|e| {
        DataError::transient(format!(
            "reading the answer failed: {}",
            super::error::error_chain(&e)
        ))
    })? {
        let room = spec.max_body_bytes.saturating_sub(body.len() as u64) as usize;
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            truncated = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    let mut out = Map::new();
    out.insert("status".into(), Value::from(status));
    out.insert(
        "body".into(),
        Value::from(String::from_utf8_lossy(&body).to_string()),
    );
    if truncated {
        out.insert("body_truncated".into(), Value::from(true));
        sink.line(&format!(
            "tern: the answer was longer than {} bytes; the body output is cut there",
            spec.max_body_bytes
        ));
    }
    Ok(out)
}

/// Streams the whole answer into the target (see `Lake::create`: uploaded as it arrives, or a
/// temporary file beside the object): the object appears whole or not at all. Outputs
/// `status`, `url` and `bytes`.
async fn save_body(
    conns: &Connections,
    sink: &dyn LogSink,
    mut resp: reqwest::Response,
    status: u16,
    target_conn: &str,
    path: &str,
) -> Result<Map<String, Value>, DataError> {
    use std::io::Write;
    let lake = super::lake::Lake::open(connection(conns, target_conn)?)?;
    lake.check(path).await?;
    let write_err = |e: std::io::Error| DataError::transient(format!("cannot write {path}: {e}"));
    let (out, mut pending) = lake.create(path)?;
    let mut bytes = 0u64;
    let mut w = std::io::BufWriter::with_capacity(256 * 1024, out);
    let copied = async {
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            DataError::transient(format!(
                "reading the answer failed: {}",
                super::error::error_chain(&e)
            ))
        })? {
            w.write_all(&chunk).map_err(write_err)?;
            bytes += chunk.len() as u64;
            std::future::poll_fn(|cx| pending.poll_ready(cx)).await?;
        }
        w.flush().map_err(write_err)
    }
    .await;
    drop(w);
    if let Err(e) = copied {
        return Err(pending.abort().await.unwrap_or(e));
    }
    let url = format!("{}{}", lake.url_prefix, path.trim_start_matches('/'));
    sink.line(&format!(
        "tern: writing the answer ({bytes} bytes) to {url}"
    ));
    lake.publish(pending).await?;
    sink.line(&format!("tern: wrote {url}"));
    let mut out = Map::new();
    out.insert("status".into(), Value::from(status));
    out.insert("url".into(), Value::from(url));
    out.insert("bytes".into(), Value::from(bytes));
    Ok(out)
}
