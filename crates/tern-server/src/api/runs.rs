//! DAG run routes: list, trigger (with conf), detail, mark success/failed, delete, and
//! clearing tasks of a run (with their downstream or upstream tasks).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tern_core::RunState;
use tern_store::browse::BrowseFilter;
use tern_store::manage::ClearScope;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{audit, body, find_run, run_tis};
use crate::api_error::ApiError;
use crate::auth::{Caller, Role};
use crate::state::AppState;
use crate::trigger::TriggerError;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_runs, trigger_run))
        .routes(routes!(get_run, patch_run, delete_run))
        .routes(routes!(clear_tasks))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunListQuery {
    /// Only runs in this state (`queued`, `running`, `success`, `failed`).
    state: Option<String>,
    /// Only runs whose logical date is at or after this (RFC 3339).
    logical_date_gte: Option<chrono::DateTime<chrono::Utc>>,
    /// Only runs whose logical date is at or before this (RFC 3339).
    logical_date_lte: Option<chrono::DateTime<chrono::Utc>>,
    /// How many runs, newest first (1–1000, default 100).
    limit: Option<i64>,
    /// How many to skip (for the next page).
    offset: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/dags/{dag_id}/dagRuns", tag = "runs",
    params(("dag_id" = String, Path, description = "DAG id, or `~` for every DAG"), RunListQuery),
    responses((status = 200, description = "`{dag_runs}`, newest logical date first"), (status = 400, description = "Unknown state")))]
async fn list_runs(
    State(s): State<AppState>,
    caller: Caller,
    Path(dag_id): Path<String>,
    q: Result<Query<RunListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = super::query(q)?;
    caller.require(Role::Viewer, "listing runs")?;
    let state = super::state_param::<RunState>(q.state.as_deref())?;
    let dag = (dag_id != "~").then(|| dag_id.clone());
    if let Some(d) = &dag {
        s.store.get_dag(d).await.map_err(ApiError::from_store)?;
    }
    let filter = BrowseFilter {
        dag_id: dag,
        state,
        queue: None,
        since: q.logical_date_gte,
        until: q.logical_date_lte,
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
        offset: q.offset.unwrap_or(0).max(0),
    };
    let runs = s
        .store
        .browse_runs(&filter)
        .await
        .map_err(ApiError::from_store)?;
    Ok(Json(json!({"dag_runs": runs})))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    /// Run configuration; `{"params": {...}}` overrides the DAG's params.
    #[serde(default)]
    #[schema(value_type = Object)]
    conf: Value,
    /// Run id (default `manual__<time>`).
    #[serde(default)]
    dag_run_id: Option<String>,
    /// Logical date (default now).
    #[serde(default)]
    logical_date: Option<chrono::DateTime<chrono::Utc>>,
}

/// A refused trigger as an API error.
pub(crate) fn trigger_error(e: TriggerError, dag_id: &str) -> ApiError {
    match e {
        TriggerError::Store(e) => ApiError::from_store(e),
        TriggerError::Paused(_) => ApiError::new(
            StatusCode::CONFLICT,
            "paused",
            e.to_string(),
            format!("PATCH /api/v1/dags/{dag_id} with {{\"is_paused\": false}}"),
        ),
        TriggerError::Inactive(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string(), "")
        }
        TriggerError::InvalidConf { .. } => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_conf",
            e.to_string(),
            "give params in conf as {\"params\": {...}} with the types the DAG declares",
        ),
    }
}

#[utoipa::path(post, path = "/api/v1/dags/{dag_id}/dagRuns", tag = "runs", request_body = TriggerBody,
    params(("dag_id" = String, Path, description = "DAG id")),
    responses((status = 201, description = "`{dag_run}` created"), (status = 400, description = "Invalid conf"),
              (status = 404, description = "No such DAG"), (status = 409, description = "Paused, or the run id is taken")))]
async fn trigger_run(
    State(s): State<AppState>,
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
        .map_err(|e| trigger_error(e, &dag_id))?;
    audit(
        &s,
        &caller,
        "run.trigger",
        &format!("{dag_id}/{}", run.run_id),
        "",
    )
    .await?;
    Ok((StatusCode::CREATED, Json(json!({"dag_run": run}))))
}

#[utoipa::path(get, path = "/api/v1/dags/{dag_id}/dagRuns/{run_id}", tag = "runs",
    params(("dag_id" = String, Path, description = "DAG id"), ("run_id" = String, Path, description = "Run id")),
    responses((status = 200, description = "`{dag_run, task_instances}`"), (status = 404, description = "No such run")))]
async fn get_run(
    State(s): State<AppState>,
    caller: Caller,
    Path((dag_id, run_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer, "reading a run")?;
    let run = find_run(&s, &dag_id, &run_id).await?;
    let tis = run_tis(&s, run.pk).await?;
    Ok(Json(json!({"dag_run": run, "task_instances": tis})))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkBody {
    /// `success` or `failed`.
    state: String,
}

impl MarkBody {
    pub(crate) fn state(&self) -> &str {
        &self.state
    }
}

pub(crate) fn mark_state<T: std::str::FromStr>(state: &str) -> Result<T, ApiError> {
    match state {
        "success" | "failed" => state
            .parse::<T>()
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "bad state", "")),
        other => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("cannot mark as {other:?}"),
            "state is `success` or `failed`",
        )),
    }
}

#[utoipa::path(patch, path = "/api/v1/dags/{dag_id}/dagRuns/{run_id}", tag = "runs", request_body = MarkBody,
    params(("dag_id" = String, Path, description = "DAG id"), ("run_id" = String, Path, description = "Run id")),
    responses((status = 200, description = "`{dag_run}` marked"), (status = 400, description = "Bad state"), (status = 404, description = "No such run")))]
async fn patch_run(
    State(s): State<AppState>,
    caller: Caller,
    Path((dag_id, run_id)): Path<(String, String)>,
    b: Result<Json<MarkBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::User, "marking a run")?;
    let m = body(b)?;
    let state: RunState = mark_state(&m.state)?;
    let run = find_run(&s, &dag_id, &run_id).await?;
    let note = format!("marked {} by {}", m.state, caller.actor());
    s.store
        .mark_run(run.pk, state, &note)
        .await
        .map_err(ApiError::from_store)?;
    audit(
        &s,
        &caller,
        &format!("run.mark_{}", m.state),
        &format!("{dag_id}/{run_id}"),
        "",
    )
    .await?;
    let run = find_run(&s, &dag_id, &run_id).await?;
    Ok(Json(json!({"dag_run": run})))
}

#[utoipa::path(delete, path = "/api/v1/dags/{dag_id}/dagRuns/{run_id}", tag = "runs",
    params(("dag_id" = String, Path, description = "DAG id"), ("run_id" = String, Path, description = "Run id")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such run")))]
async fn delete_run(
    State(s): State<AppState>,
    caller: Caller,
    Path((dag_id, run_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::User, "deleting a run")?;
    let run = find_run(&s, &dag_id, &run_id).await?;
    s.store
        .delete_run(run.pk)
        .await
        .map_err(ApiError::from_store)?;
    audit(&s, &caller, "run.delete", &format!("{dag_id}/{run_id}"), "").await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearBody {
    /// Tasks to clear (default: every task of the run).
    #[serde(default)]
    task_ids: Option<Vec<String>>,
    /// Also clear everything downstream of them.
    #[serde(default)]
    include_downstream: bool,
    /// Also clear everything upstream of them.
    #[serde(default)]
    include_upstream: bool,
    /// Only this instance of the named mapped tasks (the tasks `include_*` adds are cleared
    /// whole). Left out: every instance, and a mapped task expands again.
    #[serde(default)]
    map_index: Option<i64>,
}

/// Clears tasks of a run and records it; returns the cleared task ids.
pub(crate) async fn clear(
    s: &AppState,
    caller: &Caller,
    dag_id: &str,
    run_id: &str,
    task_ids: Option<Vec<String>>,
    scope: ClearScope,
) -> Result<Vec<String>, ApiError> {
    let run = find_run(s, dag_id, run_id).await?;
    let ids = match task_ids {
        Some(ids) if !ids.is_empty() => ids,
        _ => run_tis(s, run.pk)
            .await?
            .into_iter()
            .map(|t| t.task_id)
            .collect(),
    };
    let cleared = s
        .store
        .clear_tasks(run.pk, &ids, scope)
        .await
        .map_err(ApiError::from_store)?;
    audit(
        s,
        caller,
        "task.clear",
        &format!("{dag_id}/{run_id}"),
        &cleared.join(","),
    )
    .await?;
    Ok(cleared)
}

#[utoipa::path(post, path = "/api/v1/dags/{dag_id}/dagRuns/{run_id}/clear", tag = "runs", request_body = ClearBody,
    params(("dag_id" = String, Path, description = "DAG id"), ("run_id" = String, Path, description = "Run id")),
    responses((status = 200, description = "`{cleared: [task ids]}`"), (status = 404, description = "No such run or task")))]
async fn clear_tasks(
    State(s): State<AppState>,
    caller: Caller,
    Path((dag_id, run_id)): Path<(String, String)>,
    b: Result<Json<ClearBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::User, "clearing tasks")?;
    let c = body(b)?;
    let scope = ClearScope {
        downstream: c.include_downstream,
        upstream: c.include_upstream,
        map_index: c.map_index,
    };
    let cleared = clear(&s, &caller, &dag_id, &run_id, c.task_ids, scope).await?;
    Ok(Json(json!({"cleared": cleared})))
}
