//! DAG routes: list (search, tag, paused filters and pagination), detail, source, versions,
//! next scheduled runs, pause/unpause, import errors.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{audit, body};
use crate::api_error::ApiError;
use crate::auth::{Caller, Role};
use crate::state::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_dags))
        .routes(routes!(get_dag, patch_dag, delete_dag))
        .routes(routes!(dag_source))
        .routes(routes!(dag_versions))
        .routes(routes!(dag_next_runs))
        .routes(routes!(import_errors))
        .routes(routes!(refresh_dags))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DagListQuery {
    /// Only DAGs whose id contains this text (case-insensitive).
    pub search: Option<String>,
    /// Only DAGs with this tag.
    pub tag: Option<String>,
    /// Only paused (`true`) or unpaused (`false`) DAGs.
    pub paused: Option<bool>,
    /// Include DAGs no longer in the DAG folder (default false).
    #[serde(default)]
    pub include_inactive: bool,
    /// Page size (1–1000, default 100).
    pub limit: Option<usize>,
    /// How many matching DAGs to skip.
    #[serde(default)]
    pub offset: usize,
}

/// One page of DAG summaries, how many matched, and the tags of every active DAG (for a
/// tag filter).
pub struct DagSummaries {
    pub dags: Vec<Value>,
    pub total: usize,
    pub tags: std::collections::BTreeSet<String>,
}

/// The DAGs matching `q`, with what lists show of them (the API's listing, the UI's DAG list and
/// `tern dags list`, local or remote).
pub async fn dag_summaries(
    store: &tern_store::Store,
    q: &DagListQuery,
) -> Result<DagSummaries, tern_store::StoreError> {
    let dags = store.list_dags().await?;
    let ids: Vec<i64> = dags.iter().map(|d| d.latest_version_id).collect();
    store.preload_specs(&ids).await?;
    let search = q.search.as_deref().map(str::to_lowercase);
    let mut out = Vec::new();
    let mut tags = std::collections::BTreeSet::new();
    for d in dags {
        if !q.include_inactive && !d.is_active {
            continue;
        }
        // Specs are cached in memory: reading each one costs no query.
        let spec = store.spec(d.latest_version_id).await?;
        if d.is_active {
            tags.extend(spec.tags.iter().cloned());
        }
        if search
            .as_deref()
            .is_some_and(|t| !d.dag_id.to_lowercase().contains(t))
        {
            continue;
        }
        if q.paused.is_some_and(|p| p != d.is_paused) {
            continue;
        }
        if let Some(tag) = &q.tag {
            if !spec.tags.iter().any(|t| t == tag) {
                continue;
            }
        }
        let mut v = serde_json::to_value(&d).unwrap_or_default();
        v["tags"] = json!(spec.tags);
        v["description"] = json!(spec.description);
        v["tasks"] = json!(spec.tasks.len());
        out.push(v);
    }
    let total = out.len();
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    Ok(DagSummaries {
        dags: out.into_iter().skip(q.offset).take(limit).collect(),
        total,
        tags,
    })
}

#[utoipa::path(get, path = "/api/v1/dags", tag = "dags", params(DagListQuery),
    responses((status = 200, description = "`{dags, total}`: one page of DAGs and how many match")))]
async fn list_dags(
    State(s): State<AppState>,
    caller: Caller,
    q: Result<Query<DagListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = super::query(q)?;
    caller.require(Role::Viewer, "listing DAGs")?;
    let page = dag_summaries(&s.store, &q)
        .await
        .map_err(ApiError::from_store)?;
    Ok(Json(json!({"dags": page.dags, "total": page.total})))
}

#[utoipa::path(get, path = "/api/v1/dags/{dag_id}", tag = "dags",
    params(("dag_id" = String, Path, description = "DAG id")),
    responses((status = 200, description = "The DAG with its latest spec (tasks, params, schedule)"),
              (status = 404, description = "No such DAG")))]
async fn get_dag(
    State(s): State<AppState>,
    caller: Caller,
    Path(dag_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer, "reading a DAG")?;
    let dag = s
        .store
        .get_dag(&dag_id)
        .await
        .map_err(ApiError::from_store)?;
    let spec = s
        .store
        .spec(dag.latest_version_id)
        .await
        .map_err(ApiError::from_store)?;
    let mut v = serde_json::to_value(&dag).unwrap_or_default();
    v["spec"] = serde_json::to_value(&*spec).unwrap_or_default();
    Ok(Json(v))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DagPatch {
    /// Pause (`true`) or unpause (`false`) the DAG.
    is_paused: bool,
}

#[utoipa::path(patch, path = "/api/v1/dags/{dag_id}", tag = "dags", request_body = DagPatch,
    params(("dag_id" = String, Path, description = "DAG id")),
    responses((status = 200, description = "Paused or unpaused"), (status = 404, description = "No such DAG")))]
async fn patch_dag(
    State(s): State<AppState>,
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
    audit(&s, &caller, action, &dag_id, "").await?;
    Ok(Json(json!({"dag_id": dag_id, "is_paused": p.is_paused})))
}

#[utoipa::path(delete, path = "/api/v1/dags/{dag_id}", tag = "dags",
    params(("dag_id" = String, Path, description = "DAG id")),
    responses((status = 204, description = "The DAG's runs, task instances, tries, outputs and versions are deleted (its file, if still there, brings it back at the next scan)"),
              (status = 404, description = "No such DAG"), (status = 409, description = "A run is queued or running")))]
async fn delete_dag(
    State(s): State<AppState>,
    caller: Caller,
    Path(dag_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Op, "deleting a DAG")?;
    s.store
        .delete_dag(&dag_id)
        .await
        .map_err(ApiError::from_store)?;
    audit(&s, &caller, "dag.delete", &dag_id, "").await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The source of a DAG's file, read from the DAG folder (the path cannot leave it).
pub async fn read_source(s: &AppState, dag_id: &str) -> Result<(String, String), ApiError> {
    let dag = s
        .store
        .get_dag(dag_id)
        .await
        .map_err(ApiError::from_store)?;
    let Some(folder) = s.options.dags_folder.get() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this server has no DAG folder",
            "read the source where the DAG folder is synced",
        ));
    };
    if dag.file.split('/').any(|p| p == "..") || dag.file.starts_with('/') {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "bad file path",
            "",
        ));
    }
    let text = std::fs::read_to_string(folder.join(&dag.file)).map_err(|e| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("cannot read {}: {e}", dag.file),
            "the file may have been removed from the DAG folder",
        )
    })?;
    Ok((dag.file, text))
}

#[utoipa::path(get, path = "/api/v1/dags/{dag_id}/source", tag = "dags",
    params(("dag_id" = String, Path, description = "DAG id")),
    responses((status = 200, description = "`{file, source}` of the DAG file"), (status = 404, description = "No such DAG or file")))]
async fn dag_source(
    State(s): State<AppState>,
    caller: Caller,
    Path(dag_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer, "reading DAG source")?;
    let (file, source) = read_source(&s, &dag_id).await?;
    Ok(Json(json!({"file": file, "source": source})))
}

#[utoipa::path(get, path = "/api/v1/dags/{dag_id}/versions", tag = "dags",
    params(("dag_id" = String, Path, description = "DAG id")),
    responses((status = 200, description = "`{versions: [{version_id, version, created_at, bundle_version}]}`, newest first; `bundle_version` is the commit of the DAG bundle the version was loaded from (null for a plain folder)")))]
async fn dag_versions(
    State(s): State<AppState>,
    caller: Caller,
    Path(dag_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer, "reading DAG versions")?;
    s.store
        .get_dag(&dag_id)
        .await
        .map_err(ApiError::from_store)?;
    let versions: Vec<Value> = s
        .store
        .dag_versions(&dag_id)
        .await
        .map_err(ApiError::from_store)?
        .into_iter()
        .map(|v| {
            json!({"version_id": v.id, "version": v.version, "created_at": v.created_at,
                   "bundle_version": v.bundle_version})
        })
        .collect();
    Ok(Json(json!({"versions": versions})))
}

#[utoipa::path(post, path = "/api/v1/dags/refresh", tag = "dags",
    responses((status = 202, description = "`{refresh: \"requested\"}`: this server reads the DAG files again now (a DAG bundle's branch is fetched; the other servers load the commit it finds within their `scheduler.dag_scan_interval`)")))]
async fn refresh_dags(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Role::Op, "refreshing the DAG files")?;
    s.events.dags_refresh.notify_one();
    audit(&s, &caller, "dags.refresh", "", "").await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"refresh": "requested"}))))
}

#[utoipa::path(get, path = "/api/v1/importErrors", tag = "dags",
    responses((status = 200, description = "`{import_errors: [{file, line, message}]}`")))]
async fn import_errors(State(s): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer, "reading import errors")?;
    let errors = s
        .store
        .import_errors()
        .await
        .map_err(ApiError::from_store)?;
    Ok(Json(json!({"import_errors": errors})))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NextQuery {
    /// How many runs (1–100, default 5).
    pub n: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/dags/{dag_id}/next", tag = "dags", params(("dag_id" = String, Path, description = "DAG id"), NextQuery),
    responses((status = 200, description = "`{dag_id, schedule, timezone, is_paused, catchup, runs: [{logical_date, data_interval: {start, end}, run_after}]}`: the next runs the schedule makes, oldest first"),
              (status = 400, description = "`n` out of range"), (status = 404, description = "No such DAG")))]
async fn dag_next_runs(
    State(s): State<AppState>,
    caller: Caller,
    Path(dag_id): Path<String>,
    q: Result<Query<NextQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = super::query(q)?;
    caller.require(Role::Viewer, "reading a DAG's next runs")?;
    let n = q.n.unwrap_or(5);
    if !(1..=100).contains(&n) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("n = {n} is out of range"),
            "ask for 1 to 100 runs",
        ));
    }
    let next = crate::scheduler::upcoming_runs(&s.store, &dag_id, n)
        .await
        .map_err(ApiError::from_store)?;
    Ok(Json(serde_json::to_value(next).unwrap_or_default()))
}
