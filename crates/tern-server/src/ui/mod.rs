//! The web UI: server-rendered HTML pages (minijinja templates and static assets embedded in
//! the binary; a small vanilla script for auto-refresh, live logs and buttons that call the
//! REST API with the session's CSRF token).
//!
//! - [`session`]: login, logout, rate limiting, the [`session::Viewer`] of a page;
//! - [`pages`]: DAG list, DAG page (grid, graph, code, versions, runs), trigger form, run page
//!   (tasks, Gantt), task-instance page (tries, outputs, live log);
//! - [`activity`]: cluster activity (queues, agents, pools, the scheduler loop), live;
//! - [`browse`]: runs and task instances across DAGs, filtered (what is failing now);
//! - [`admin_pages`]: pools, agents, connections, users and tokens, audit log;
//! - [`charts`]: a DAG's task durations, landing times and calendar (SVG);
//! - [`code`]: a DAG file with numbered, highlighted lines;
//! - [`versions`]: what changed between two versions of a DAG;
//! - [`draw`]: the grid, the graph (SVG, left to right) and the Gantt chart, drawn in Rust
//!   because they are the pages that grow with DAG size.

pub mod activity;
pub mod admin_pages;
pub mod browse;
pub mod charts;
pub mod code;
pub mod draw;
pub mod pages;
pub mod session;
pub mod versions;

use std::sync::LazyLock;

use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use minijinja::Environment;

use crate::state::AppState;

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.add_filter("when", when);
    for (name, text) in [
        ("base.html", include_str!("templates/base.html")),
        ("login.html", include_str!("templates/login.html")),
        ("dags.html", include_str!("templates/dags.html")),
        ("dag.html", include_str!("templates/dag.html")),
        ("trigger.html", include_str!("templates/trigger.html")),
        ("browse.html", include_str!("templates/browse.html")),
        ("activity.html", include_str!("templates/activity.html")),
        ("run.html", include_str!("templates/run.html")),
        ("task.html", include_str!("templates/task.html")),
        ("pools.html", include_str!("templates/pools.html")),
        ("variables.html", include_str!("templates/variables.html")),
        ("agents.html", include_str!("templates/agents.html")),
        (
            "connections.html",
            include_str!("templates/connections.html"),
        ),
        ("users.html", include_str!("templates/users.html")),
        ("audit.html", include_str!("templates/audit.html")),
        ("error.html", include_str!("templates/error.html")),
    ] {
        env.add_template(name, text)
            .unwrap_or_else(|e| panic!("template {name}: {e}"));
    }
    env
});

/// `{{ t|when }}`: an RFC 3339 time as `<time datetime="…">2026-12-06 05:16:25 UTC</time>`
/// (`when('m')`: to the minute); the page script shows it in the browser's zone instead when
/// the user chose local time. Nothing for an empty or missing time.
fn when(value: Option<String>, precision: Option<String>) -> minijinja::Value {
    let Some(t) = value
        .as_deref()
        .and_then(|v| chrono::DateTime::parse_from_rfc3339(v).ok())
    else {
        return minijinja::Value::from("");
    };
    let utc = t.with_timezone(&chrono::Utc);
    let minutes = precision.as_deref() == Some("m");
    let text = utc.format(if minutes {
        "%Y-%m-%d %H:%M UTC"
    } else {
        "%Y-%m-%d %H:%M:%S UTC"
    });
    minijinja::Value::from_safe_string(format!(
        "<time datetime=\"{}\"{}>{text}</time>",
        utc.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        if minutes { " data-p=\"m\"" } else { "" }
    ))
}

/// Renders a template; a template bug shows as a 500 page naming the template.
pub fn render(name: &str, ctx: serde_json::Value) -> Response {
    match TEMPLATES
        .get_template(name)
        .and_then(|t| t.render(to_template_value(&ctx)))
    {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!("web UI template {name}: {e:#}");
            (StatusCode::INTERNAL_SERVER_ERROR, "page rendering failed").into_response()
        }
    }
}

/// A JSON value as a template value. Converted by hand because the workspace's serde_json
/// keeps numbers in arbitrary precision, which would reach templates as maps.
fn to_template_value(v: &serde_json::Value) -> minijinja::Value {
    use minijinja::Value as V;
    use serde_json::Value as J;
    match v {
        J::Null => V::from(()),
        J::Bool(b) => V::from(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => V::from(i),
            (None, Some(u)) => V::from(u),
            _ => V::from(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => V::from(s.as_str()),
        J::Array(a) => V::from(a.iter().map(to_template_value).collect::<Vec<_>>()),
        J::Object(o) => V::from(
            o.iter()
                .map(|(k, v)| (k.clone(), to_template_value(v)))
                .collect::<std::collections::BTreeMap<String, V>>(),
        ),
    }
}

/// The error page for a failed store call (a 404 for what is missing, 503 otherwise).
pub fn store_fail(viewer: &session::Viewer, e: tern_store::StoreError) -> Response {
    let e = crate::api_error::ApiError::from_store(e);
    error_page(viewer, e.status, &e.message)
}

/// An error page in the UI's frame.
pub fn error_page(viewer: &session::Viewer, status: StatusCode, message: &str) -> Response {
    let mut r = render(
        "error.html",
        serde_json::json!({"me": viewer.context(), "message": message, "status": status.as_u16()}),
    );
    *r.status_mut() = status;
    r
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { axum::response::Redirect::to("/dags") }))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/dags", get(pages::dag_list))
        .route("/dags/{dag_id}", get(pages::dag_page))
        .route(
            "/dags/{dag_id}/trigger",
            get(pages::trigger_form).post(pages::trigger_submit),
        )
        .route("/dags/{dag_id}/runs/{run_id}", get(pages::run_page))
        .route(
            "/dags/{dag_id}/runs/{run_id}/tasks/{task_id}",
            get(pages::task_page),
        )
        .route("/browse", get(browse::browse))
        .route("/activity", get(activity::activity))
        .route("/pools", get(admin_pages::pools))
        .route("/agents", get(admin_pages::agents))
        .route("/connections", get(admin_pages::connections))
        .route("/variables", get(admin_pages::variables))
        .route("/users", get(admin_pages::users))
        .route("/audit", get(admin_pages::audit))
        .route("/static/app.css", get(css))
        .route("/static/app.js", get(js))
        .route("/static/api-docs.js", get(docs_js))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// Headers on every page and asset of the UI: no scripts, styles, frames or form targets but
/// the server's own (the UI has no inline script or style), no framing by other sites, no
/// content-type sniffing, no full URLs in referrers.
pub async fn security_headers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; \
             frame-ancestors 'none'; form-action 'self'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        h.insert(name, header::HeaderValue::from_static(value));
    }
    resp
}

async fn docs_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        include_str!("static/api-docs.js"),
    )
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        include_str!("static/app.css"),
    )
}

async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        include_str!("static/app.js"),
    )
}
