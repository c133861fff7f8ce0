//! The HTTP server of the control plane: `/health` (no auth; whether the metadata database
//! answers), the REST API (`/api/v1/*`, see [`crate::api`]), the web UI (see [`crate::ui`])
//! and the agent gateway (`/agent/v1/*`, see [`crate::agent_api`]).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tern_store::Store;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct AppState {
    store: Store,
    roles: std::sync::Arc<crate::supervise::RoleBoard>,
}

/// `/health` answers within this, whatever the database does.
const HEALTH_DB_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest an HTTP request may take to start its answer (a claim long-poll waits at most
/// 30 s; streams such as a live log answer at once and are not cut).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub fn router(
    store: Store,
    gateway: crate::gateway::Gateway,
    options: crate::state::WebOptions,
    roles: std::sync::Arc<crate::supervise::RoleBoard>,
) -> Router {
    let shared = crate::state::AppState {
        store: store.clone(),
        logs: gateway.logs.clone(),
        secrets: gateway.secrets.clone(),
        options,
        events: gateway.events.clone(),
        login_limiter: Default::default(),
    };
    Router::new()
        .route("/health", get(health))
        .with_state(AppState { store, roles })
        .merge(crate::api::router(shared.clone()))
        .merge(crate::ui::router(shared))
        .merge(crate::agent_api::router(gateway))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn(refuse_control_characters))
        // A panicking handler answers 500 and the server goes on; a request that never
        // answers is cut.
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
}

/// Every refusal of an API or agent call is `{code, message, hint}` JSON, also those made
/// before a handler runs (a path segment of the wrong type, a query that does not parse, an
/// unknown route or method).
async fn json_errors(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let api = {
        let p = req.uri().path();
        p.starts_with("/api/") || p.starts_with("/agent/")
    };
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !api || !status.is_client_error() || is_json {
        return resp;
    }
    let text = axum::body::to_bytes(resp.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let (code, default) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "this route does not take that method")
        }
        StatusCode::PAYLOAD_TOO_LARGE => ("too_large", "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "send JSON with content-type application/json",
        ),
        _ => ("invalid", "the request is malformed"),
    };
    (
        status,
        Json(json!({
            "code": code,
            "message": if text.is_empty() { default.to_string() } else { text },
            "hint": "see /api/v1/docs for each route's parameters and body",
        })),
    )
        .into_response()
}

/// A path whose decoded form holds a control character (a NUL, a newline) names nothing
/// tern has: 400 before any handler or database sees it.
async fn refuse_control_characters(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = req.uri().path();
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    if decoded.chars().any(char::is_control) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "code": "invalid",
                "message": "the path holds a control character",
                "hint": "ids are letters, digits, `_`, `.`, `-` (run ids also `:` and `+`)",
            })),
        )
            .into_response();
    }
    next.run(req).await
}

async fn health(State(s): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let roles = s.roles.report();
    let db = tokio::time::timeout(HEALTH_DB_TIMEOUT, s.store.ping()).await;
    let database = match db {
        Ok(Ok(())) => "ok",
        Ok(Err(e)) => {
            tracing::error!("health check: {e}");
            "unreachable"
        }
        Err(_) => "no answer within 1 s",
    };
    // A scheduler that has not finished a pass for a minute is stuck.
    let idle = crate::metrics::metrics().scheduler_idle_seconds();
    let scheduler = match idle {
        None => json!("none"),
        Some(s) if s < 60.0 => json!("ok"),
        Some(_) => json!("stale"),
    };
    // Task logs an object store has not taken yet (it is down, or refuses them): reported, not
    // an outage (they stay readable from the database and are shipped when it is back).
    let waiting = if database == "ok" {
        tokio::time::timeout(HEALTH_DB_TIMEOUT, s.store.logs_waiting_to_ship())
            .await
            .ok()
    } else {
        None
    };
    let task_logs = match waiting {
        Some(Ok((waiting, error))) => json!({"waiting_to_ship": waiting, "last_error": error}),
        _ => json!(null),
    };
    let ok = database == "ok" && scheduler != "stale" && s.roles.all_running();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ok { "ok" } else { "unavailable" },
            "database": database,
            "scheduler": scheduler,
            "scheduler_last_pass_seconds_ago": idle,
            "roles": roles,
            "task_logs": task_logs,
            "version": env!("CARGO_PKG_VERSION"),
        })),
    )
}

/// Binds `addr` and serves until `shutdown`, over HTTPS when `tls` names a PEM certificate
/// chain and key. Returns the bound address (useful with port 0).
pub async fn serve(
    store: Store,
    gateway: crate::gateway::Gateway,
    addr: &str,
    tls: Option<(&Path, &Path)>,
    dags_folder: crate::bundle::CurrentFolder,
    roles: std::sync::Arc<crate::supervise::RoleBoard>,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr} (setting server.bind / --port): {e}; stop the other process or choose another port")
    })?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let options = crate::state::WebOptions {
        dags_folder,
        tls: tls.is_some(),
    };
    let app =
        router(store, gateway, options, roles).into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        stopper.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    let task = match tls {
        None => {
            let server = axum_server::from_tcp(listener)?.handle(handle);
            tokio::spawn(async move {
                if let Err(e) = server.serve(app).await {
                    tracing::error!("HTTP server stopped: {e}");
                }
            })
        }
        Some((cert, key)) => {
            tern_worker::http_transport::install_crypto_provider();
            let config = RustlsConfig::from_pem_file(cert, key).await.map_err(|e| {
                anyhow::anyhow!(
                    "cannot load the TLS certificate {} and key {} (settings server.tls_cert, server.tls_key): {e}",
                    cert.display(),
                    key.display()
                )
            })?;
            let server = axum_server::from_tcp_rustls(listener, config)?.handle(handle);
            tokio::spawn(async move {
                if let Err(e) = server.serve(app).await {
                    tracing::error!("HTTPS server stopped: {e}");
                }
            })
        }
    };
    Ok((local, task))
}
