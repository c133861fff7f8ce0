//! The REST API under `/api/v1` (JSON). Every route needs a caller (a bearer token, or a web
//! session plus its CSRF token for changes; see [`crate::auth`]) with the role the route names.
//! Every change is recorded in the audit log with the caller's name. The OpenAPI document is
//! generated from the handlers' annotations (`utoipa`), so it lists exactly the routes served.
//!
//! - [`dags`]: DAGs, their source, versions and import errors;
//! - [`runs`]: DAG runs (list, trigger, detail, mark, delete) and clearing tasks;
//! - [`tasks`]: task instances (list, detail with tries, mark), logs and outputs;
//! - [`admin`]: pools, agents and activation codes, connections, users, tokens, the audit log;
//! - [`variables`]: variables (secret values never sent back).

pub mod admin;
pub mod dags;
pub mod runs;
pub mod tasks;
pub mod variables;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api_error::ApiError;
use crate::auth::{Caller, Role};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tern REST API",
        description = "Control-plane API of tern. Authenticate with `Authorization: Bearer <token>` \
                       (`tern tokens create USER`). Errors are `{code, message, hint}`."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "dags", description = "DAGs, source, versions, import errors"),
        (name = "runs", description = "DAG runs"),
        (name = "tasks", description = "Task instances, logs and outputs"),
        (name = "admin", description = "Pools, agents, connections, users, tokens, audit"),
        (name = "meta", description = "Version, metrics, this document")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API routes and their OpenAPI document.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(version))
        .routes(routes!(openapi_json))
        .merge(dags::routes())
        .merge(runs::routes())
        .merge(tasks::routes())
        .merge(admin::routes())
        .merge(variables::routes())
}

/// The OpenAPI document of the API, as served at `/api/v1/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_routes().split_for_parts().1
}

pub fn router(state: AppState) -> Router {
    let (api, _doc) = api_routes().split_for_parts();
    api.route("/metrics", get(metrics))
        .route(
            "/api/v1/docs",
            get(docs_page).layer(axum::middleware::from_fn(crate::ui::security_headers)),
        )
        .layer(axum::middleware::from_fn(measure))
        .with_state(state)
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
    State(s): State<AppState>,
    caller: Caller,
) -> Result<([(axum::http::HeaderName, &'static str); 1], String), ApiError> {
    caller.require(Role::Viewer, "reading metrics")?;
    let text = crate::metrics::metrics()
        .render(&s.store, &s.events.roles)
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
pub(crate) fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(v)| v).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            e.body_text(),
            "send a JSON object with Content-Type: application/json",
        )
    })
}

/// Query parameters, or a 400 that says which one is wrong.
pub(crate) fn query<T>(q: Result<axum::extract::Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|axum::extract::Query(v)| v).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            e.body_text(),
            "see /api/v1/docs for the route's query parameters",
        )
    })
}

/// A `state` query parameter as a run or task state, or a 400 listing the states.
pub(crate) fn state_param<T: std::str::FromStr<Err = String>>(
    raw: Option<&str>,
) -> Result<Option<T>, ApiError> {
    raw.map(|st| {
        st.parse::<T>().map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                e,
                "give one of the states the message lists",
            )
        })
    })
    .transpose()
}

/// A run by DAG and run id, or a 404 naming them.
pub(crate) async fn find_run(
    s: &AppState,
    dag_id: &str,
    run_id: &str,
) -> Result<tern_store::DagRun, ApiError> {
    s.store
        .get_run(dag_id, run_id)
        .await
        .map_err(ApiError::from_store)
}

/// The task instances of a run, in DAG order.
pub(crate) async fn run_tis(
    s: &AppState,
    run_pk: i64,
) -> Result<Vec<tern_store::TaskInstance>, ApiError> {
    s.store
        .task_instances(run_pk)
        .await
        .map_err(ApiError::from_store)
}

/// A task instance of a run (instance `map_index` of a mapped task), with the run, or a 404
/// naming what is missing.
pub(crate) async fn find_ti(
    s: &AppState,
    dag_id: &str,
    run_id: &str,
    task_id: &str,
    map_index: Option<i64>,
) -> Result<(tern_store::DagRun, tern_store::TaskInstance), ApiError> {
    let run = find_run(s, dag_id, run_id).await?;
    let ti = s
        .store
        .task_instance_at(run.pk, task_id, map_index)
        .await
        .map_err(ApiError::from_store)?;
    Ok((run, ti))
}

/// Records a change in the audit log.
pub(crate) async fn audit(
    s: &AppState,
    caller: &Caller,
    action: &str,
    target: &str,
    detail: &str,
) -> Result<(), ApiError> {
    s.store
        .audit(&caller.actor(), action, target, detail)
        .await
        .map_err(ApiError::unavailable)
}

#[utoipa::path(get, path = "/api/v1/version", tag = "meta",
    responses((status = 200, description = "Server and agent-protocol versions")))]
async fn version(_caller: Caller) -> Json<Value> {
    Json(json!({"version": env!("CARGO_PKG_VERSION"), "protocol": tern_protocol::PROTOCOL_VERSION}))
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "This OpenAPI document")))]
async fn openapi_json(caller: Caller) -> Result<Json<utoipa::openapi::OpenApi>, ApiError> {
    caller.require(Role::Viewer, "reading the API document")?;
    Ok(Json(openapi()))
}

/// Browsable API docs, for logged-in users (the login page otherwise): a static page that
/// reads `/api/v1/openapi.json` with the browser's session and lists every route.
async fn docs_page(_viewer: crate::ui::session::Viewer) -> Html<&'static str> {
    Html(include_str!("../ui/static/api-docs.html"))
}
