//! The Browse page: runs or task instances of every DAG, filtered by state, DAG, queue (the
//! site) and logical-date range, newest first, a page at a time. Opened without filters it
//! shows the failed task instances: the on-call's first question is what is failing now.

use axum::extract::{Query, State};
use axum::response::Response;
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::{json, Value};
use tern_core::{RunState, TaskState};
use tern_store::browse::BrowseFilter;

use super::draw::seg;
use super::pages::{duration, instance_query};
use super::session::Viewer;
use super::{render, store_fail};
use crate::state::AppState;

const PAGE: i64 = 100;

#[derive(Deserialize, Default)]
pub struct BrowseQuery {
    /// `tasks` (default) or `runs`.
    #[serde(default)]
    what: Option<String>,
    /// A state, or `any`; absent means `failed`.
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    dag: Option<String>,
    #[serde(default)]
    queue: Option<String>,
    /// First and last day of the runs' logical dates (`YYYY-MM-DD`, UTC).
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    page: i64,
}

fn given(v: &Option<String>) -> Option<String> {
    v.as_ref()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn day(v: &Option<String>) -> Option<NaiveDate> {
    given(v).and_then(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok())
}

/// The logical-date range and page of a browse.
struct Window {
    since: Option<chrono::DateTime<chrono::Utc>>,
    until: Option<chrono::DateTime<chrono::Utc>>,
    limit: i64,
    offset: i64,
}

/// `q`'s filter for states of type `S` (`any` filters on none; a state `S` does not know is
/// reported in `error` and not filtered on).
fn filter_of<S: std::str::FromStr<Err = String>>(
    q: &BrowseQuery,
    state: &str,
    queue: Option<String>,
    w: &Window,
    error: &mut Option<String>,
) -> BrowseFilter<S> {
    let state = match state {
        "any" => None,
        st => st.parse::<S>().map_err(|e| *error = Some(e)).ok(),
    };
    BrowseFilter {
        dag_id: given(&q.dag),
        state,
        queue,
        since: w.since,
        until: w.until,
        limit: w.limit,
        offset: w.offset,
    }
}

fn link(dag_id: &str, run_id: &str) -> String {
    format!("/dags/{}/runs/{}", seg(dag_id), seg(run_id))
}

pub async fn browse(
    State(s): State<AppState>,
    viewer: Viewer,
    Query(q): Query<BrowseQuery>,
) -> Response {
    let runs_view = q.what.as_deref() == Some("runs");
    let state = given(&q.state).unwrap_or_else(|| "failed".into());
    let since = day(&q.since).map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    let until = day(&q.until).map(|d| {
        d.and_hms_milli_opt(23, 59, 59, 999)
            .unwrap_or_default()
            .and_utc()
    });
    let page = q.page.max(0);
    // One more than a page tells whether there is a next one.
    let (limit, offset) = (PAGE + 1, page * PAGE);
    let mut error = None;
    let window = Window {
        since,
        until,
        limit,
        offset,
    };
    let rows: Vec<Value> = if runs_view {
        let f = filter_of::<RunState>(&q, &state, None, &window, &mut error);
        match s.store.browse_runs(&f).await {
            Ok(runs) => runs
                .iter()
                .map(|r| {
                    let mut v = json!(r);
                    v["url"] = json!(link(&r.dag_id, &r.run_id));
                    v["dag_url"] = json!(format!("/dags/{}", seg(&r.dag_id)));
                    v["duration"] = json!(duration(r.started_at, r.ended_at));
                    v
                })
                .collect(),
            Err(e) => return store_fail(&viewer, e),
        }
    } else {
        let f = filter_of::<TaskState>(&q, &state, given(&q.queue), &window, &mut error);
        match s.store.browse_task_instances(&f).await {
            Ok(tis) => tis
                .iter()
                .map(|b| {
                    let t = &b.instance;
                    let mut v = json!(b);
                    v["label"] = json!(t.label());
                    v["run_url"] = json!(link(&t.dag_id, &t.run_id));
                    v["dag_url"] = json!(format!("/dags/{}", seg(&t.dag_id)));
                    v["url"] = json!(format!(
                        "{}/tasks/{}{}",
                        link(&t.dag_id, &t.run_id),
                        seg(&t.task_id),
                        instance_query(t.map_index)
                    ));
                    v["duration"] = json!(duration(t.started_at, t.ended_at));
                    v
                })
                .collect(),
            Err(e) => return store_fail(&viewer, e),
        }
    };
    let more = rows.len() as i64 > PAGE;
    let rows: Vec<Value> = rows.into_iter().take(PAGE as usize).collect();
    let dags = s
        .store
        .list_dags()
        .await
        .map(|d| d.into_iter().map(|d| d.dag_id).collect::<Vec<_>>())
        .unwrap_or_default();
    let states: Vec<&str> = if runs_view {
        RunState::ALL.iter().map(|s| s.as_str()).collect()
    } else {
        TaskState::ALL.iter().map(|s| s.as_str()).collect()
    };
    // The same filters on another page.
    let page_url = |p: i64| {
        let mut parts = vec![
            format!("what={}", if runs_view { "runs" } else { "tasks" }),
            format!("state={}", seg(&state)),
        ];
        for (k, v) in [
            ("dag", &q.dag),
            ("queue", &q.queue),
            ("since", &q.since),
            ("until", &q.until),
        ] {
            if let Some(v) = given(v) {
                parts.push(format!("{k}={}", seg(&v)));
            }
        }
        parts.push(format!("page={p}"));
        format!("/browse?{}", parts.join("&"))
    };
    render(
        "browse.html",
        json!({
            "me": viewer.context(), "nav": "browse", "runs_view": runs_view, "rows": rows,
            "states": states, "dags": dags, "error": error,
            "q": {"state": state, "dag": given(&q.dag), "queue": given(&q.queue),
                  "since": given(&q.since), "until": given(&q.until)},
            "page": page,
            "prev": (page > 0).then(|| page_url(page - 1)),
            "next": more.then(|| page_url(page + 1)),
            "tasks_url": "/browse?what=tasks", "runs_url": "/browse?what=runs",
        }),
    )
}
