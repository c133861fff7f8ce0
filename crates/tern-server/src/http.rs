//! The HTTP server of the control plane: `/health` (no auth; whether the metadata database
//! answers) and the agent gateway (`/agent/v1/*`, see [`crate::agent_api`]).

use std::net::SocketAddr;

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
}

pub fn router(store: Store, gateway: crate::gateway::Gateway) -> Router {
    Router::new()
        .route("/health", get(health))
        .with_state(AppState { store })
        .merge(crate::agent_api::router(gateway))
}

async fn health(State(s): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    match s.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "ok", "database": "ok", "version": env!("CARGO_PKG_VERSION")})),
        ),
        Err(e) => {
            tracing::error!("health check: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "database": "unreachable"})),
            )
        }
    }
}

/// Binds `addr` and serves until `shutdown`. Returns the bound address (useful with port 0).
pub async fn serve(
    store: Store,
    gateway: crate::gateway::Gateway,
    addr: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr} (setting server.bind / --port): {e}; stop the other process or choose another port")
    })?;
    let local = listener.local_addr()?;
    let app = router(store, gateway).into_make_service_with_connect_info::<SocketAddr>();
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    Ok((local, handle))
}
