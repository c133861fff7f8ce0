//! The REST API under `/api/v1` (JSON; every route needs a bearer token, see [`crate::auth`]):
//! version, DAGs (list, pause/unpause), triggering runs, and the audit log. Every change is
//! recorded in the audit log with the caller's name.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tern_store::Store;

use crate::api_error::ApiError;
use crate::auth::{Caller, HasStore, Role};

#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
}

impl HasStore for ApiState {
    fn store(&self) -> &Store {
        &self.store
    }
}

pub fn router(store: Store) -> Router {
    Router::new()
        .route("/api/v1/version", get(version))
        .route("/api/v1/dags", get(list_dags))
        .route("/api/v1/dags/{dag_id}", patch(patch_dag))
        .route("/api/v1/dags/{dag_id}/dagRuns", post(trigger_run))
        .route("/api/v1/audit", get(audit))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn(measure))
        .with_state(ApiState { store })
}

/// Records each call's latency by route template and status.
async fn measure(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    crate::metrics::metrics().api_call(&route, resp.status().as_u16(), started.elapsed());
    resp
}

async fn metrics(
    State(s): State<ApiState>,
    caller: Caller,
) -> Result<([(axum::http::HeaderName, &'static str); 1], String), ApiError> {
    caller.require(Role::Viewer, "reading metrics")?;
    let text = crate::metrics::metrics()
        .render(&s.store)
        .await
        .map_err(ApiError::unavailable)?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    ))
}

/// A JSON body, or a 400 that says what is wrong with it.
fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(v)| v).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            e.body_text(),
            "send a JSON object with Content-Type: application/json",
        )
    })
}

async fn version(_caller: Caller) -> Json<Value> {
    Json(json!({"version": env!("CARGO_PKG_VERSION"), "protocol": tern_protocol::PROTOCOL_VERSION}))
}

async fn list_dags(State(s): State<ApiState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer, "listing DAGs")?;
    let dags = s.store.list_dags().await.map_err(ApiError::from_store)?;
    Ok(Json(json!({"dags": dags, "total": dags.len()})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DagPatch {
    is_paused: bool,
}

async fn patch_dag(
    State(s): State<ApiState>,
    caller: Caller,
    Path(dag_id): Path<String>,
    b: Result<Json<DagPatch>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::User, "pausing or unpausing a DAG")?;
    let p = body(b)?;
    s.store
        .set_paused(&dag_id, p.is_paused)
        .await
        .map_err(ApiError::from_store)?;
    let action = if p.is_paused {
        "dag.pause"
    } else {
        "dag.unpause"
    };
    s.store
        .audit(&caller.user.username, action, &dag_id, "")
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(json!({"dag_id": dag_id, "is_paused": p.is_paused})))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    #[serde(default)]
    conf: Value,
    #[serde(default)]
    dag_run_id: Option<String>,
    #[serde(default)]
    logical_date: Option<chrono::DateTime<chrono::Utc>>,
}

async fn trigger_run(
    State(s): State<ApiState>,
    caller: Caller,
    Path(dag_id): Path<String>,
    b: Result<Json<TriggerBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Role::User, "triggering a run")?;
    let t = body(b)?;
    let req = crate::trigger::TriggerRequest {
        dag_id: dag_id.clone(),
        conf: t.conf,
        run_id: t.dag_run_id,
        logical_date: t.logical_date,
        run_type: None,
    };
    let (run, _) = crate::trigger::trigger(&s.store, &req)
        .await
        .map_err(|e| match e {
            crate::trigger::TriggerError::Store(e) => ApiError::from_store(e),
            crate::trigger::TriggerError::Paused(_) => ApiError::new(
                StatusCode::CONFLICT,
                "paused",
                e.to_string(),
                format!("PATCH /api/v1/dags/{dag_id} with {{\"is_paused\": false}}"),
            ),
            crate::trigger::TriggerError::Inactive(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string(), "")
            }
            crate::trigger::TriggerError::InvalidConf { .. } => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_conf",
                e.to_string(),
                "give params in conf as {\"params\": {...}} with the types the DAG declares",
            ),
        })?;
    s.store
        .audit(
            &caller.user.username,
            "run.trigger",
            &format!("{dag_id}/{}", run.run_id),
            "",
        )
        .await
        .map_err(ApiError::unavailable)?;
    Ok((StatusCode::CREATED, Json(json!({"dag_run": run}))))
}

#[derive(Deserialize)]
struct AuditQuery {
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

async fn audit(
    State(s): State<ApiState>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin, "reading the audit log")?;
    let entries = s
        .store
        .audit_log(q.limit.clamp(1, 1000))
        .await
        .map_err(ApiError::from_store)?;
    Ok(Json(json!({"entries": entries})))
}
