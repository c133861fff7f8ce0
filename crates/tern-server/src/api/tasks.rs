//! Task-instance routes: list per run, detail with tries and outputs, mark success/failed,
//! logs by try (from an offset, for tailing; or as a server-sent event stream), a run's outputs.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures::Stream;
use serde::Deserialize;
use serde_json::{json, Value};
use tern_core::TaskState;
use tern_store::browse::BrowseFilter;
use tern_store::TaskTry;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::runs::{mark_state, MarkBody};
use super::{audit, body, find_run, find_ti, run_tis};
use crate::api_error::ApiError;
use crate::auth::{Caller, Role};
use crate::state::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_task_instances))
        .routes(routes!(get_task_instance, patch_task_instance))
        .routes(routes!(task_log))
        .routes(routes!(task_log_stream))
        .routes(routes!(task_log_download))
        .routes(routes!(run_outputs))
}

#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TaskListQuery {
    /// Only instances in this state (`failed`, `running`, …).
    state: Option<String>,
    /// Only instances on this queue (a site's agents serve its queue).
    queue: Option<String>,
    /// Across runs (`run_id` `~`): only runs whose logical date is at or after this.
    logical_date_gte: Option<chrono::DateTime<chrono::Utc>>,
    /// Across runs: only runs whose logical date is at or before this.
    logical_date_lte: Option<chrono::DateTime<chrono::Utc>>,
    /// Across runs: how many, newest first (1–1000, default 100).
    limit: Option<i64>,
    /// Across runs: how many to skip.
    offset: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/dags/{dag_id}/dagRuns/{run_id}/taskInstances", tag = "tasks",
    params(("dag_id" = String, Path, description = "DAG id, or `~` (with run id `~`) for every DAG"),
           ("run_id" = String, Path, description = "Run id, or `~` for every run, newest first"), TaskListQuery),
    responses((status = 200, description = "`{task_instances}`: a run's in DAG order; across runs (`~`) newest first, each with its run's `logical_date`"),
              (status = 400, description = "Unknown state, or a DAG id with `~` for the run but no such DAG"),
              (status = 404, description = "No such run")))]
async fn list_task_instances(
    State(s): State<AppState>,
    caller: Caller,
    Path((dag_id, run_id)): Path<(String, String)>,
    q: Result<Query<TaskListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = super::query(q)?;
    caller.require(Role::Viewer, "listing task instances")?;
    let state = super::state_param::<TaskState>(q.state.as_deref())?;
    if run_id == "~" {
        let dag = (dag_id != "~").then(|| dag_id.clone());
        if let Some(d) = &dag {
            s.store.get_dag(d).await.map_err(ApiError::from_store)?;
        }
        let filter = BrowseFilter {
            dag_id: dag,
            state,
            queue: q.queue,
            since: q.logical_date_gte,
            until: q.logical_date_lte,
            limit: q.limit.unwrap_or(100).clamp(1, 1000),
            offset: q.offset.unwrap_or(0).max(0),
        };
        let tis = s
            .store
            .browse_task_instances(&filter)
            .await
            .map_err(ApiError::from_store)?;
        return Ok(Json(json!({"task_instances": tis})));
    }
    let run = find_run(&s, &dag_id, &run_id).await?;
    let tis: Vec<_> = run_tis(&s, run.pk)
        .await?
        .into_iter()
        .filter(|t| state.is_none_or(|st| t.state == st))
        .filter(|t| q.queue.as_ref().is_none_or(|queue| &t.queue == queue))
        .collect();
    // `task_instance` when one instance was marked (a task that is not mapped, or one index).
    let one = (tis.len() == 1).then(|| tis[0].clone());
    Ok(Json(json!({"task_instance": one, "task_instances": tis})))
}

#[utoipa::path(get, path = "/api/v1/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}", tag = "tasks",
    params(("dag_id" = String, Path, description = "DAG id"), ("run_id" = String, Path, description = "Run id"),
           ("task_id" = String, Path, description = "Task id"), InstanceQuery),
    responses((status = 200, description = "`{task_instance, tries, outputs}`; a mapped task's instance also has `map_values` (the elements it was expanded with)"),
              (status = 400, description = "A mapped task with several instances and no `map_index`"),
              (status = 404, description = "No such task instance")))]
async fn get_task_instance(
    State(s): State<AppState>,
    caller: Caller,
    Path((dag_id, run_id, task_id)): Path<(String, String, String)>,
    q: Result<Query<InstanceQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = super::query(q)?;
    caller.require(Role::Viewer, "reading a task instance")?;
    let (_, ti) = find_ti(&s, &dag_id, &run_id, &task_id, q.map_index).await?;
    let tries = s
        .store
        .task_tries(ti.id)
        .await
        .map_err(ApiError::from_store)?;
    let outputs = s
        .store
        .instance_outputs(ti.id)
        .await
        .map_err(ApiError::from_store)?;
    let tries: Vec<Value> = tries.iter().map(try_json).collect();
    let mut answer = json!({"task_instance": ti, "tries": tries, "outputs": outputs});
    if ti.map_index >= 0 {
        answer["map_values"] = Value::Object(
            s.store
                .map_values(ti.id)
                .await
                .map_err(ApiError::from_store)?,
        );
    }
    Ok(Json(answer))
}

/// A try without its log's storage path.
fn try_json(t: &TaskTry) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("log_path");
    }
    v
}

#[utoipa::path(patch, path = "/api/v1/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}", tag = "tasks",
    request_body = MarkBody,
    params(("dag_id" = String, Path, description = "DAG id"), ("run_id" = String, Path, description = "Run id"),
           ("task_id" = String, Path, description = "Task id"), InstanceQuery),
    responses((status = 200, description = "`{task_instance, task_instances}` marked (every instance of a mapped task unless `map_index` names one; `task_instance` when one was)"),
              (status = 400, description = "Bad state"),
              (status = 404, description = "No such task instance")))]
async fn patch_task_instance(
    State(s): State<AppState>,
    caller: Caller,
    Path((dag_id, run_id, task_id)): Path<(String, String, String)>,
    q: Result<Query<InstanceQuery>, QueryRejection>,
    b: Result<Json<MarkBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = super::query(q)?;
    caller.require(Role::User, "marking a task instance")?;
    let m = body(b)?;
    let state: TaskState = mark_state(m.state())?;
    let tis = mark(&s, &caller, &dag_id, &run_id, &task_id, q.map_index, state).await?;
    // `task_instance` when one instance was marked (a task that is not mapped, or one index).
    let one = (tis.len() == 1).then(|| tis[0].clone());
    Ok(Json(json!({"task_instance": one, "task_instances": tis})))
}

/// Marks a task instance and records it.
pub(crate) async fn mark(
    s: &AppState,
    caller: &Caller,
    dag_id: &str,
    run_id: &str,
    task_id: &str,
    map_index: Option<i64>,
    state: TaskState,
) -> Result<Vec<tern_store::TaskInstance>, ApiError> {
    let run = find_run(s, dag_id, run_id).await?;
    let note = format!("marked {} by {}", state.as_str(), caller.actor());
    s.store
        .mark_task(run.pk, task_id, map_index, state, &note)
        .await
        .map_err(ApiError::from_store)?;
    audit(
        s,
        caller,
        &format!("task.mark_{}", state.as_str()),
        &format!(
            "{dag_id}/{run_id}/{}",
            tern_core::mapping::instance_label(task_id, map_index.unwrap_or(-1))
        ),
        "",
    )
    .await?;
    let all = s
        .store
        .task_instances_of(run.pk, task_id)
        .await
        .map_err(ApiError::from_store)?;
    Ok(all
        .into_iter()
        .filter(|t| map_index.is_none_or(|i| t.map_index == i))
        .collect())
}

/// Which instance of a mapped task a route is about.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InstanceQuery {
    /// The instance of a mapped task (0 to n-1); leave it out for a task that is not mapped.
    #[serde(default)]
    map_index: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// The instance of a mapped task (0 to n-1); leave it out for a task that is not mapped.
    #[serde(default)]
    map_index: Option<i64>,
    /// Byte offset to read from (the `next_offset` of the previous answer).
    #[serde(default)]
    offset: u64,
    /// Most bytes to answer with (default and maximum 1 MiB); `more` says whether the log
    /// goes on.
    #[serde(default)]
    limit: Option<u64>,
}

/// Most bytes of log in one JSON answer: a reader of a huge log pages through it, so a
/// request never holds more than this.
const LOG_PAGE: u64 = 1 << 20;

/// The log file of one try, and whether the try has ended.
pub(crate) async fn log_of_try(
    s: &AppState,
    dag_id: &str,
    run_id: &str,
    task_id: &str,
    map_index: Option<i64>,
    try_number: u32,
) -> Result<(String, bool), ApiError> {
    let (_, ti) = find_ti(s, dag_id, run_id, task_id, map_index).await?;
    let tries = s
        .store
        .task_tries(ti.id)
        .await
        .map_err(ApiError::from_store)?;
    let t = tries
        .into_iter()
        .find(|t| t.try_number == try_number)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("task {task_id:?} has no try {try_number} in run {run_id:?}"),
                "the task instance's `tries` lists the tries it has",
            )
        })?;
    let ended = t.ended_at.is_some() && t.state != TaskState::UpForReschedule;
    Ok((t.log_path, ended))
}

fn log_read_error(e: std::io::Error) -> ApiError {
    tracing::error!("reading a task log: {e}");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the log could not be read",
        "retry shortly; the server log has the cause",
    )
}

#[utoipa::path(get, path = "/api/v1/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
    tag = "tasks",
    params(("dag_id" = String, Path, description = "DAG id"), ("run_id" = String, Path, description = "Run id"),
           ("task_id" = String, Path, description = "Task id"), ("try_number" = u32, Path, description = "Try (1-based)"),
           LogQuery),
    responses((status = 200, description = "`{content, next_offset, more, ended}`: up to `limit` bytes (1 MiB) of the log from `offset` on; `more` when it goes on"),
              (status = 404, description = "No such try")))]
async fn task_log(
    State(s): State<AppState>,
    caller: Caller,
    Path((dag_id, run_id, task_id, try_number)): Path<(String, String, String, u32)>,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = super::query(q)?;
    caller.require(Role::Viewer, "reading task logs")?;
    let (path, ended) = log_of_try(&s, &dag_id, &run_id, &task_id, q.map_index, try_number).await?;
    let limit = q.limit.unwrap_or(LOG_PAGE).clamp(1, LOG_PAGE);
    let (content, read) = s
        .logs
        .read_from(&path, q.offset, limit)
        .await
        .map_err(log_read_error)?;
    let size = s.logs.len(&path).await.map_err(log_read_error)?;
    let next = q.offset + read;
    Ok(Json(json!({
        "content": content,
        "next_offset": next,
        "more": next < size,
        "ended": ended,
    })))
}

#[utoipa::path(get, path = "/api/v1/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}/download",
    tag = "tasks",
    params(("dag_id" = String, Path, description = "DAG id"), ("run_id" = String, Path, description = "Run id"),
           ("task_id" = String, Path, description = "Task id"), ("try_number" = u32, Path, description = "Try (1-based)"),
           InstanceQuery),
    responses((status = 200, description = "The try's whole log as a text file, streamed"),
              (status = 206, description = "The part a `Range: bytes=N-M` header asked for"),
              (status = 404, description = "No such try"),
              (status = 416, description = "The range starts past the end")))]
async fn task_log_download(
    State(s): State<AppState>,
    caller: Caller,
    Path((dag_id, run_id, task_id, try_number)): Path<(String, String, String, u32)>,
    q: Result<Query<InstanceQuery>, QueryRejection>,
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    use axum::http::header;
    use axum::response::IntoResponse;
    let q = super::query(q)?;
    caller.require(Role::Viewer, "reading task logs")?;
    let (path, _) = log_of_try(&s, &dag_id, &run_id, &task_id, q.map_index, try_number).await?;
    let size = s.logs.len(&path).await.map_err(log_read_error)?;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_range(v, size));
    let (start, end) = match range {
        Some(Ok(r)) => r,
        Some(Err(())) => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
            )
                .into_response())
        }
        None => (0, size),
    };
    let instance = q.map_index.map(|i| format!("@{i}")).unwrap_or_default();
    let name = format!("{dag_id}.{run_id}.{task_id}{instance}.{try_number}.log")
        .replace(['"', '\\', '/'], "_");
    let len = end - start;
    // Sent in 64 KiB pieces read as the client takes them: a huge log costs no memory.
    let logs = s.logs.clone();
    let stream = futures::stream::unfold((start, len), move |(pos, left)| {
        let (logs, path) = (logs.clone(), path.clone());
        async move {
            if left == 0 {
                return None;
            }
            match logs.read_bytes(&path, pos, left.min(64 * 1024)).await {
                Ok(buf) if !buf.is_empty() => {
                    let n = buf.len() as u64;
                    Some((Ok::<_, std::io::Error>(buf), (pos + n, left - n)))
                }
                _ => None,
            }
        }
    });
    let mut resp = axum::body::Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::ACCEPT_RANGES,
        header::HeaderValue::from_static("bytes"),
    );
    h.insert(header::CONTENT_LENGTH, len.into());
    if let Ok(v) = header::HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if range.is_some() {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = header::HeaderValue::from_str(&format!(
            "bytes {start}-{}/{size}",
            end.saturating_sub(1)
        )) {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(resp)
}

/// `bytes=N-`, `bytes=N-M` or `bytes=-N` of a file of `size` bytes, as `[start, end)`;
/// `Err` when it starts past the end; `None` for a header that is not one such range.
fn parse_range(v: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = v.strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (size.saturating_sub(n), size)
        }
        (s, "") => (s.parse().ok()?, size),
        (s, e) => (
            s.parse().ok()?,
            e.parse::<u64>().ok()?.saturating_add(1).min(size),
        ),
    };
    if start >= size || start >= end {
        return Some(Err(()));
    }
    Some(Ok((start, end)))
}

/// Most bytes one live-log event carries; a long backlog goes out in several.
const STREAM_CHUNK: u64 = 256 * 1024;

#[utoipa::path(get, path = "/api/v1/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}/stream",
    tag = "tasks",
    params(("dag_id" = String, Path, description = "DAG id"), ("run_id" = String, Path, description = "Run id"),
           ("task_id" = String, Path, description = "Task id"), ("try_number" = u32, Path, description = "Try (1-based)"),
           LogQuery),
    responses((status = 200, description = "Server-sent events: `log` events carry new text, one `end` event when the try has ended"),
              (status = 404, description = "No such try")))]
async fn task_log_stream(
    State(s): State<AppState>,
    caller: Caller,
    Path((dag_id, run_id, task_id, try_number)): Path<(String, String, String, u32)>,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let q = super::query(q)?;
    caller.require(Role::Viewer, "reading task logs")?;
    let map_index = q.map_index;
    log_of_try(&s, &dag_id, &run_id, &task_id, map_index, try_number).await?;
    let stream = futures::stream::unfold((s, q.offset, false), move |(s, offset, done)| {
        let (dag_id, run_id, task_id) = (dag_id.clone(), run_id.clone(), task_id.clone());
        async move {
            if done {
                return None;
            }
            let mut waited = Duration::ZERO;
            loop {
                let Ok((path, ended)) =
                    log_of_try(&s, &dag_id, &run_id, &task_id, map_index, try_number).await
                else {
                    return Some((
                        Ok(Event::default().event("end").data("gone")),
                        (s, offset, true),
                    ));
                };
                let (text, read) = s
                    .logs
                    .read_from(&path, offset, STREAM_CHUNK)
                    .await
                    .unwrap_or_default();
                if read > 0 {
                    let next = offset + read;
                    let ev = Event::default()
                        .event("log")
                        .id(next.to_string())
                        .data(text);
                    return Some((Ok(ev), (s, next, false)));
                }
                if ended {
                    return Some((
                        Ok(Event::default().event("end").data("ended")),
                        (s, offset, true),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                waited += Duration::from_millis(300);
                if waited > Duration::from_secs(600) {
                    return None;
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[utoipa::path(get, path = "/api/v1/dags/{dag_id}/dagRuns/{run_id}/outputs", tag = "tasks",
    params(("dag_id" = String, Path, description = "DAG id"), ("run_id" = String, Path, description = "Run id")),
    responses((status = 200, description = "`{outputs: {task_id: {key: value}}}`"), (status = 404, description = "No such run")))]
async fn run_outputs(
    State(s): State<AppState>,
    caller: Caller,
    Path((dag_id, run_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer, "reading outputs")?;
    let run = find_run(&s, &dag_id, &run_id).await?;
    let outputs = s
        .store
        .run_outputs(run.pk)
        .await
        .map_err(ApiError::from_store)?;
    Ok(Json(json!({"outputs": outputs})))
}
