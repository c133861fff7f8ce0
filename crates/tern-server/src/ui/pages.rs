//! The pages people work in: the DAG list, a DAG (grid, graph, code, versions, runs), the
//! trigger form built from the DAG's params, a run (tasks and Gantt) and a task instance
//! (tries, outputs, live log, clear and mark buttons).

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tern_core::ParamSpec;

use super::charts;
use super::draw::{self, seg};
use super::session::{csrf_refused, form_csrf_ok, Viewer};
use super::{error_page, render, store_fail};
use crate::api::dags::{dag_summaries, DagListQuery};
use crate::auth::Role;
use crate::state::AppState;

/// Runs shown in the grid by default, and the cells on one page of the grid (a 10,000-task
/// DAG shows its tasks a page at a time); the Durations tab reads at most GRID_CELLS cells.
const GRID_RUNS: usize = 25;
const GRID_PAGE_CELLS: usize = 25_000;
const GRID_CELLS: usize = 60_000;
const PAGE: usize = 100;

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    search: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    paused: Option<String>,
    #[serde(default)]
    page: usize,
}

pub async fn dag_list(
    State(s): State<AppState>,
    viewer: Viewer,
    Query(q): Query<ListQuery>,
) -> Response {
    let filter = DagListQuery {
        search: q.search.clone().filter(|t| !t.is_empty()),
        tag: q.tag.clone().filter(|t| !t.is_empty()),
        paused: match q.paused.as_deref() {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => None,
        },
        include_inactive: false,
        limit: Some(PAGE),
        offset: q.page * PAGE,
    };
    let page = match dag_summaries(&s.store, &filter).await {
        Ok(v) => v,
        Err(e) => return store_fail(&viewer, e),
    };
    let total = page.total;
    let recent = match s.store.recent_runs_by_dag(8).await {
        Ok(r) => r,
        Err(e) => return store_fail(&viewer, e),
    };
    let last_ends = match s.store.last_scheduled_interval_ends().await {
        Ok(r) => r,
        Err(e) => return store_fail(&viewer, e),
    };
    let errors = s.store.import_errors().await.unwrap_or_default();
    let now = Utc::now();
    let mut rows = Vec::with_capacity(page.dags.len());
    for mut d in page.dags {
        let id = d["dag_id"].as_str().unwrap_or_default().to_string();
        let runs = recent.get(&id).cloned().unwrap_or_default();
        d["last_run"] = json!(runs.first());
        d["recent"] = json!(runs.iter().rev().collect::<Vec<_>>());
        if let Some(v) = d["latest_version_id"].as_i64() {
            if let Ok(spec) = s.store.spec(v).await {
                d["next_run"] =
                    json!(
                        crate::scheduler::next_run(&spec, last_ends.get(&id).copied(), now)
                            .map(|r| r.run_after)
                    );
            }
        }
        d["url"] = json!(format!("/dags/{}", seg(&id)));
        rows.push(d);
    }
    render(
        "dags.html",
        json!({
            "me": viewer.context(), "nav": "dags", "dags": rows, "total": total,
            "import_errors": errors, "tags": page.tags,
            "q": {"search": q.search, "tag": q.tag, "paused": q.paused},
            "page": q.page, "pages": total.div_ceil(PAGE),
        }),
    )
}

#[derive(Deserialize)]
pub struct DagQuery {
    #[serde(default)]
    tab: Option<String>,
    #[serde(default)]
    runs: Option<usize>,
    /// The run whose states colour the graph (default the newest).
    #[serde(default)]
    run: Option<String>,
    /// The task groups the graph shows opened (comma-separated ids).
    #[serde(default)]
    open: Option<String>,
    /// The task the Durations tab charts (default: the whole DAG).
    #[serde(default)]
    task: Option<String>,
    /// The page of a big grid's tasks (from 0), and how many task rows a page has (default:
    /// as many as make about 25,000 cells).
    #[serde(default)]
    page: usize,
    #[serde(default)]
    rows: Option<usize>,
    /// The two versions the Versions tab compares.
    #[serde(default)]
    from: Option<i64>,
    #[serde(default)]
    to: Option<i64>,
}

/// The version a live page's script last received (`X-Tern-Version`), if it sent one.
fn version_seen(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers.get("x-tern-version").and_then(|v| v.to_str().ok())
}

/// How a live page's version follows the task instances of its runs still going.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Watch {
    /// Exactly: an aggregate of those instances (for a page of one run).
    Exact,
    /// Cheaply: the estate's active counts ([`tern_store::Store::estate_activity`]), plus a
    /// time bucket of [`COARSE_REFRESH`] while any run is going, since counts can miss a
    /// change (for the grid, whose runs may hold hundreds of thousands of instances).
    Coarse,
}

/// How stale a grid with going runs may get when the estate's counts miss a change.
const COARSE_REFRESH: i64 = 15_000;

/// What a live page shows changes when any of these do: the runs it shows (id, state, end),
/// the DAG's version, and the task instances of its runs still going (see [`Watch`]). Finished
/// runs change only by hand (audited) or by being cleared (which reopens them).
async fn live_version(
    s: &AppState,
    dag_version: i64,
    runs: &[tern_store::DagRun],
    watch: Watch,
) -> Result<String, tern_store::StoreError> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dag_version.hash(&mut h);
    for r in runs {
        (
            r.pk,
            r.state.as_str(),
            r.ended_at.map(|t| t.timestamp_millis()),
        )
            .hash(&mut h);
    }
    let going: Vec<i64> = runs
        .iter()
        .filter(|r| !r.state.is_finished())
        .map(|r| r.pk)
        .collect();
    match watch {
        Watch::Exact => s.store.activity_fingerprint(&going).await?.hash(&mut h),
        // Finished runs change only by hand, which the audit log records (the aggregate of no
        // run is the newest audit entry alone).
        Watch::Coarse if going.is_empty() => s.store.activity_fingerprint(&[]).await?.hash(&mut h),
        Watch::Coarse => {
            s.store.estate_activity().await?.hash(&mut h);
            (Utc::now().timestamp_millis() / COARSE_REFRESH).hash(&mut h);
        }
    }
    Ok(format!("{:x}", h.finish()))
}

/// The answer to a live refresh of a page that has not changed: nothing.
fn unchanged() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

pub async fn dag_page(
    State(s): State<AppState>,
    viewer: Viewer,
    Path(dag_id): Path<String>,
    Query(q): Query<DagQuery>,
    headers: axum::http::HeaderMap,
) -> Response {
    let dag = match s.store.get_dag(&dag_id).await {
        Ok(d) => d,
        Err(e) => return store_fail(&viewer, e),
    };
    let spec = match s.store.spec(dag.latest_version_id).await {
        Ok(sp) => sp,
        Err(e) => return store_fail(&viewer, e),
    };
    let tab = q.tab.clone().unwrap_or_else(|| "grid".into());
    let mut ctx = json!({
        "me": viewer.context(), "nav": "dags", "dag": dag, "tab": tab,
        "tags": spec.tags, "description": spec.description, "task_count": spec.tasks.len(),
        "url": format!("/dags/{}", seg(&dag_id)),
    });
    // The next runs in the DAG's zone with its offset: the header shows the first, the
    // schedule tab ten.
    let shown = if tab == "schedule" { 10 } else { 1 };
    if let Ok(next) = crate::scheduler::upcoming_of(&s.store, &dag, &spec, shown).await {
        let tz = tern_core::schedule::parse_timezone(&next.timezone).unwrap_or(chrono_tz::UTC);
        let local = |t: chrono::DateTime<Utc>| {
            t.with_timezone(&tz)
                .format("%Y-%m-%d %H:%M %:z")
                .to_string()
        };
        ctx["next_runs"] = json!(next
            .runs
            .iter()
            .map(|r| json!({
                "logical_date": local(r.logical_date),
                "start": local(r.data_interval.start),
                "end": local(r.data_interval.end),
                "run_after": local(r.run_after),
            }))
            .collect::<Vec<_>>());
    }
    match tab.as_str() {
        "grid" => {
            let limit = q.runs.unwrap_or(GRID_RUNS).clamp(1, 200);
            let mut runs = match s.store.list_runs(Some(&dag_id), None, limit as i64).await {
                Ok(r) => r,
                Err(e) => return store_fail(&viewer, e),
            };
            runs.reverse();
            let version = match live_version(&s, dag.latest_version_id, &runs, Watch::Coarse).await
            {
                Ok(v) => v,
                Err(e) => return store_fail(&viewer, e),
            };
            if version_seen(&headers) == Some(version.as_str()) {
                return unchanged();
            }
            ctx["live_version"] = json!(version);
            // A big DAG's grid shows its tasks a page at a time, about GRID_PAGE_CELLS cells.
            let per_page = q
                .rows
                .unwrap_or(GRID_PAGE_CELLS / runs.len().max(1))
                .clamp(50, GRID_PAGE_CELLS);
            let pages = draw::grid_pages(&spec, per_page);
            let at = q.page.min(pages.len() - 1);
            let page = &pages[at];
            let pks: Vec<i64> = runs.iter().map(|r| r.pk).collect();
            let cells = if pages.len() == 1 {
                s.store.grid_cells(&pks).await
            } else {
                s.store.grid_cells_of_tasks(&pks, &page.task_ids).await
            };
            let cells = match cells {
                Ok(c) => c,
                Err(e) => return store_fail(&viewer, e),
            };
            ctx["grid"] = json!(draw::grid_page(&spec, &runs, &cells, page));
            ctx["shown_runs"] = json!(runs.len());
            if pages.len() > 1 {
                let first: usize = pages[..at].iter().map(|p| p.task_ids.len()).sum();
                let rows = q.rows.map(|r| format!("&rows={r}")).unwrap_or_default();
                let url = |p: usize| format!("/dags/{}?tab=grid&page={p}{rows}", seg(&dag_id));
                ctx["grid_pager"] = json!({
                    "first": first + 1, "last": first + page.task_ids.len(),
                    "total": spec.tasks.len(), "page": at + 1, "pages": pages.len(),
                    "prev": (at > 0).then(|| url(at - 1)),
                    "next": (at + 1 < pages.len()).then(|| url(at + 1)),
                });
            }
        }
        "graph" => {
            let runs = s
                .store
                .list_runs(Some(&dag_id), None, 50)
                .await
                .unwrap_or_default();
            let chosen = match &q.run {
                Some(id) => runs.iter().find(|r| &r.run_id == id),
                None => runs.first(),
            };
            let mut states = HashMap::new();
            if let Some(run) = chosen {
                if let Ok(tis) = s.store.task_instances(run.pk).await {
                    for ti in tis {
                        states.insert(ti.task_id, ti.state.as_str().to_string());
                    }
                }
                ctx["graph_run"] = json!(run.run_id);
            }
            ctx["run_ids"] = json!(runs.iter().map(|r| &r.run_id).collect::<Vec<_>>());
            // Groups are drawn closed unless named in `open` (comma-separated).
            let open: Vec<String> = q
                .open
                .as_deref()
                .unwrap_or("")
                .split(',')
                .filter(|g| spec.groups.iter().any(|s| s.group_id == *g))
                .map(str::to_string)
                .collect();
            let base = format!("/dags/{}?tab=graph", seg(&dag_id));
            let run_part = chosen
                .map(|r| format!("&run={}", seg(&r.run_id)))
                .unwrap_or_default();
            let url_with = |groups: Vec<&str>| {
                let list: Vec<String> = groups.iter().map(|g| seg(g)).collect();
                format!("{base}{run_part}&open={}", list.join(","))
            };
            let opener = |g: &str| {
                let mut all: Vec<&str> = open.iter().map(String::as_str).collect();
                all.push(g);
                url_with(all)
            };
            let open_set: std::collections::HashSet<String> = open.iter().cloned().collect();
            ctx["graph"] = json!(draw::graph(&spec, &states, &open_set, &opener));
            ctx["open_param"] = json!(open.join(","));
            ctx["open_groups"] = json!(open
                .iter()
                .map(|g| json!({
                    "group_id": g,
                    // Closing a group closes the groups inside it too.
                    "close": url_with(open.iter().map(String::as_str).filter(|o| *o != g && !o.starts_with(&format!("{g}."))).collect()),
                }))
                .collect::<Vec<_>>());
        }
        "code" => match crate::api::dags::read_source(&s, &dag_id).await {
            Ok((file, source)) => {
                ctx["file"] = json!(file);
                ctx["source_html"] = json!(super::code::highlighted(&source));
            }
            Err(e) => ctx["source_error"] = json!(e.message),
        },
        "versions" => {
            let versions = s.store.dag_versions(&dag_id).await.unwrap_or_default();
            let page = format!("/dags/{}?tab=versions", seg(&dag_id));
            // Newest first: each version compares with the one before it.
            ctx["versions"] = json!(versions
                .iter()
                .enumerate()
                .map(|(i, row)| {
                    let (v, at) = (row.version, row.created_at);
                    let before = versions.get(i + 1).map(|b| b.version);
                    json!({"version": v, "created_at": at,
                           "compare": before.map(|b| format!("{page}&from={b}&to={v}"))})
                })
                .collect::<Vec<_>>());
            if let (Some(from), Some(to)) = (q.from, q.to) {
                let id_of = |n: i64| {
                    versions
                        .iter()
                        .find(|row| row.version == n)
                        .map(|row| row.id)
                };
                match (id_of(from), id_of(to)) {
                    (Some(a), Some(b)) => match (s.store.spec(a).await, s.store.spec(b).await) {
                        (Ok(old), Ok(new)) => {
                            ctx["diff"] = super::versions::compare(&old, &new);
                            ctx["diff"]["from"] = json!(from);
                            ctx["diff"]["to"] = json!(to);
                        }
                        (Err(e), _) | (_, Err(e)) => return store_fail(&viewer, e),
                    },
                    _ => {
                        return error_page(
                            &viewer,
                            StatusCode::NOT_FOUND,
                            &format!(
                            "{dag_id} has no version {from} or {to}; the Versions tab lists them"
                        ),
                        )
                    }
                }
            }
        }
        "runs" => {
            let runs = s
                .store
                .list_runs(Some(&dag_id), None, 200)
                .await
                .unwrap_or_default();
            ctx["runs"] = json!(runs
                .iter()
                .map(|r| {
                    let mut v = json!(r);
                    v["url"] = json!(format!("/dags/{}/runs/{}", seg(&dag_id), seg(&r.run_id)));
                    v["duration"] = json!(duration(r.started_at, r.ended_at));
                    v
                })
                .collect::<Vec<_>>());
        }
        "durations" => {
            let cap = (GRID_CELLS / spec.tasks.len().max(1)).max(1);
            let limit = q.runs.unwrap_or(GRID_RUNS).clamp(1, 200).min(cap);
            let mut runs = match s.store.list_runs(Some(&dag_id), None, limit as i64).await {
                Ok(r) => r,
                Err(e) => return store_fail(&viewer, e),
            };
            runs.reverse();
            let pks: Vec<i64> = runs.iter().map(|r| r.pk).collect();
            let cells = match s.store.grid_cells(&pks).await {
                Ok(c) => c,
                Err(e) => return store_fail(&viewer, e),
            };
            durations_context(&mut ctx, &dag_id, &spec, &runs, &cells, q.task.as_deref());
        }
        "calendar" => {
            let today = Utc::now().date_naive();
            let since = (today - chrono::Duration::days(364))
                .and_hms_opt(0, 0, 0)
                .unwrap_or_default()
                .and_utc();
            let runs = match s.store.run_states_since(&dag_id, since).await {
                Ok(r) => r,
                Err(e) => return store_fail(&viewer, e),
            };
            let mut days: HashMap<chrono::NaiveDate, charts::Day> = HashMap::new();
            for (at, state) in &runs {
                let day = days.entry(at.date_naive()).or_default();
                match state {
                    tern_core::RunState::Success => day.success += 1,
                    tern_core::RunState::Failed => day.failed += 1,
                    _ => day.active += 1,
                }
            }
            ctx["calendar"] = json!(charts::calendar(&dag_id, &days, today));
            ctx["calendar_runs"] = json!(runs.len());
        }
        // Filled above, with the header's next run.
        "schedule" => {}
        _ => return error_page(&viewer, StatusCode::NOT_FOUND, "no such tab"),
    }
    render("dag.html", ctx)
}

/// The Durations tab: without `task`, the runs' durations, a line for each of the slowest
/// tasks and every task's spread; with `task`, that task's duration and landing time per run.
fn durations_context(
    ctx: &mut Value,
    dag_id: &str,
    spec: &tern_core::DagSpec,
    runs: &[tern_store::DagRun],
    cells: &[tern_store::overview::GridCell],
    task: Option<&str>,
) {
    const LINES: usize = 10;
    const ROWS: usize = 200;
    let times = charts::TaskTimes::of(runs, cells);
    let run_hrefs: Vec<String> = runs
        .iter()
        .map(|r| format!("/dags/{}/runs/{}", seg(dag_id), seg(&r.run_id)))
        .collect();
    ctx["shown_runs"] = json!(runs.len());
    if let Some(task) = task.filter(|t| spec.task(t).is_some()) {
        let none = vec![None; runs.len()];
        let durations = times.durations.get(task).unwrap_or(&none);
        let landings = times.landings.get(task).unwrap_or(&none);
        let hrefs: Vec<String> = run_hrefs
            .iter()
            .map(|h| format!("{h}/tasks/{}", seg(task)))
            .collect();
        ctx["task"] = json!(task);
        ctx["task_chart"] = json!(charts::run_bars("task-durations", runs, durations, &hrefs));
        ctx["landing_chart"] = json!(charts::run_bars("landing-times", runs, landings, &hrefs));
        ctx["task_runs"] = json!(runs
            .iter()
            .zip(durations.iter().zip(landings))
            .zip(&hrefs)
            .rev()
            .map(|((r, (d, l)), href)| json!({
                "run_id": r.run_id, "state": r.state, "url": href,
                "duration": d.map(charts::human), "landing": l.map(charts::human)}))
            .collect::<Vec<_>>());
        return;
    }
    let run_secs: Vec<Option<f64>> = runs
        .iter()
        .map(|r| {
            r.started_at.map(|s| {
                (r.ended_at.unwrap_or_else(Utc::now) - s).num_milliseconds() as f64 / 1000.0
            })
        })
        .collect();
    ctx["run_chart"] = json!(charts::run_bars(
        "run-durations",
        runs,
        &run_secs,
        &run_hrefs
    ));
    // Tasks by median duration, slowest first.
    let mut spread: Vec<(&str, charts::Spread, Option<charts::Spread>)> = spec
        .tasks
        .iter()
        .filter_map(|t| {
            let d = charts::spread(times.durations.get(&t.task_id)?)?;
            let l = times
                .landings
                .get(&t.task_id)
                .and_then(|l| charts::spread(l));
            Some((t.task_id.as_str(), d, l))
        })
        .collect();
    spread.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    let series: Vec<(&str, &[Option<f64>])> = spread
        .iter()
        .take(LINES)
        .filter_map(|(t, _, _)| times.durations.get(*t).map(|v| (*t, v.as_slice())))
        .collect();
    ctx["lines_chart"] = json!(charts::task_lines("task-lines", runs, &series));
    let page = format!("/dags/{}?tab=durations", seg(dag_id));
    ctx["legend"] = json!(series
        .iter()
        .enumerate()
        .map(
            |(k, (t, _))| json!({"task": t, "colour": charts::line_colour(k),
                                  "url": format!("{page}&task={}", seg(t))})
        )
        .collect::<Vec<_>>());
    ctx["task_rows"] = json!(spread
        .iter()
        .take(ROWS)
        .map(|(t, d, l)| json!({
            "task": t, "url": format!("{page}&task={}", seg(t)),
            "min": charts::human(d.0), "median": charts::human(d.1), "max": charts::human(d.2),
            "landing": l.map(|l| charts::human(l.1))}))
        .collect::<Vec<_>>());
    ctx["more_tasks"] = json!(spread.len().saturating_sub(ROWS));
}

pub(super) fn duration(
    start: Option<chrono::DateTime<Utc>>,
    end: Option<chrono::DateTime<Utc>>,
) -> Option<String> {
    let s = start?;
    let e = end.unwrap_or_else(Utc::now);
    Some(tern_core::human_duration(
        (e - s).to_std().unwrap_or_default(),
    ))
}

/// One field of the trigger form.
fn param_fields(
    params: &BTreeMap<String, ParamSpec>,
    values: &Map<String, Value>,
    errors: &HashMap<String, String>,
) -> Vec<Value> {
    params
        .iter()
        .map(|(name, p)| {
            let ty = p.r#type.clone().unwrap_or_else(|| "string".into());
            let current = values.get(name).unwrap_or(&p.default);
            let text = match current {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            json!({
                "name": name, "type": ty, "description": p.description,
                "value": text, "checked": current.as_bool().unwrap_or(false),
                "error": errors.get(name),
            })
        })
        .collect()
}

/// The spec of the DAG `viewer` wants to trigger, or the page that says why not.
async fn spec_to_trigger(
    s: &AppState,
    viewer: &Viewer,
    dag_id: &str,
) -> Result<std::sync::Arc<tern_core::DagSpec>, Response> {
    if !viewer.can(Role::User) {
        return Err(error_page(
            viewer,
            StatusCode::FORBIDDEN,
            "triggering needs the user role",
        ));
    }
    match s.store.latest_spec(dag_id).await {
        Ok((_, spec)) => Ok(spec),
        Err(e) => Err(store_fail(viewer, e)),
    }
}

/// The trigger form's advanced fields (run id, logical date, raw conf) as typed, with their
/// errors.
#[derive(Default)]
struct AdvancedFields {
    run_id: String,
    logical_date: String,
    conf: String,
    errors: HashMap<&'static str, String>,
}

impl AdvancedFields {
    fn context(&self) -> Value {
        json!({"run_id": self.run_id, "logical_date": self.logical_date, "conf": self.conf,
               "errors": self.errors,
               "open": !(self.run_id.is_empty() && self.logical_date.is_empty() && self.conf.is_empty())})
    }
}

fn trigger_page(
    viewer: &Viewer,
    dag_id: &str,
    fields: Vec<Value>,
    advanced: &AdvancedFields,
    error: Option<String>,
) -> Response {
    render(
        "trigger.html",
        json!({"me": viewer.context(), "nav": "dags", "dag_id": dag_id, "fields": fields,
               "advanced": advanced.context(), "error": error,
               "url": format!("/dags/{}", seg(dag_id))}),
    )
}

pub async fn trigger_form(
    State(s): State<AppState>,
    viewer: Viewer,
    Path(dag_id): Path<String>,
) -> Response {
    let spec = match spec_to_trigger(&s, &viewer, &dag_id).await {
        Ok(spec) => spec,
        Err(page) => return page,
    };
    let fields = param_fields(&spec.params, &Map::new(), &HashMap::new());
    trigger_page(&viewer, &dag_id, fields, &AdvancedFields::default(), None)
}

/// Reads one form value as the param's type.
fn parse_param(ty: &str, raw: Option<&str>) -> Result<Value, String> {
    let raw = raw.unwrap_or("");
    match ty {
        "boolean" => Ok(Value::Bool(matches!(raw, "on" | "true" | "1"))),
        "integer" => raw
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("{raw:?} is not a whole number")),
        "number" => raw
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("{raw:?} is not a number")),
        "array" | "object" => match serde_json::from_str::<Value>(raw) {
            Ok(v @ Value::Array(_)) if ty == "array" => Ok(v),
            Ok(v @ Value::Object(_)) if ty == "object" => Ok(v),
            Ok(_) => Err(format!("write a JSON {ty}")),
            Err(e) => Err(format!("not JSON: {e}")),
        },
        _ => Ok(Value::String(raw.to_string())),
    }
}

/// A `datetime-local` value (`2026-12-06T05:30`, seconds optional) read as UTC, or an RFC
/// 3339 time with its offset.
fn parse_logical_date(raw: &str) -> Result<chrono::DateTime<Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| chrono::NaiveDateTime::parse_from_str(raw, f).ok())
    .map(|t| t.and_utc())
    .ok_or_else(|| format!("{raw:?} is not a date and time: write 2026-12-06T05:30 (UTC)"))
}

/// The run's conf from the form: the params' fields, with the raw JSON conf (when given)
/// merged over them — a top-level key replaces the fields' one, a param in its `params`
/// replaces that field's value.
fn merged_conf(values: &Map<String, Value>, raw: &Map<String, Value>) -> Value {
    let mut conf = raw.clone();
    let mut params = values.clone();
    if let Some(Value::Object(given)) = raw.get("params") {
        for (k, v) in given {
            params.insert(k.clone(), v.clone());
        }
    }
    conf.insert("params".into(), Value::Object(params));
    Value::Object(conf)
}

pub async fn trigger_submit(
    State(s): State<AppState>,
    viewer: Viewer,
    Path(dag_id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !form_csrf_ok(&viewer, form.get("csrf").map(String::as_str).unwrap_or("")) {
        return csrf_refused();
    }
    let spec = match spec_to_trigger(&s, &viewer, &dag_id).await {
        Ok(spec) => spec,
        Err(page) => return page,
    };
    let mut values = Map::new();
    let mut errors = HashMap::new();
    for (name, p) in &spec.params {
        let ty = p.r#type.as_deref().unwrap_or("string");
        let raw = form.get(&format!("p_{name}")).map(String::as_str);
        match parse_param(ty, raw) {
            Ok(v) => {
                values.insert(name.clone(), v);
            }
            Err(e) => {
                values.insert(name.clone(), Value::String(raw.unwrap_or("").into()));
                errors.insert(name.clone(), e);
            }
        }
    }
    let text = |k: &str| {
        form.get(k)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let mut advanced = AdvancedFields {
        run_id: text("run_id"),
        logical_date: text("logical_date"),
        conf: text("conf"),
        errors: HashMap::new(),
    };
    let logical_date = match advanced.logical_date.as_str() {
        "" => None,
        raw => parse_logical_date(raw)
            .map_err(|e| advanced.errors.insert("logical_date", e))
            .ok(),
    };
    let raw_conf = match advanced.conf.as_str() {
        "" => Map::new(),
        raw => match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(o)) => o,
            Ok(_) => {
                advanced.errors.insert(
                    "conf",
                    "write a JSON object, e.g. {\"params\": {\"n\": 3}}".into(),
                );
                Map::new()
            }
            Err(e) => {
                advanced.errors.insert("conf", format!("not JSON: {e}"));
                Map::new()
            }
        },
    };
    let mut general = None;
    if errors.is_empty() && advanced.errors.is_empty() {
        let req = crate::trigger::TriggerRequest {
            dag_id: dag_id.clone(),
            conf: merged_conf(&values, &raw_conf),
            run_id: Some(advanced.run_id.clone()).filter(|r| !r.is_empty()),
            logical_date,
            ..Default::default()
        };
        match crate::trigger::trigger(&s.store, &req).await {
            Ok((run, _)) => {
                let _ = s
                    .store
                    .audit(
                        &viewer.username,
                        "run.trigger",
                        &format!("{dag_id}/{}", run.run_id),
                        "web",
                    )
                    .await;
                return Redirect::to(&format!("/dags/{}/runs/{}", seg(&dag_id), seg(&run.run_id)))
                    .into_response();
            }
            Err(e) => general = Some(e.to_string()),
        }
    }
    let fields = param_fields(&spec.params, &values, &errors);
    let mut r = trigger_page(&viewer, &dag_id, fields, &advanced, general);
    *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    r
}

/// Task rows on one page of the run page: a 10,000-task run is read a page at a time, by
/// state or by a part of the task id.
const RUN_PAGE: usize = 100;

#[derive(Deserialize, Default)]
pub struct RunQuery {
    /// Only instances in this state.
    #[serde(default)]
    state: Option<String>,
    /// Only tasks whose id holds this text.
    #[serde(default)]
    task: Option<String>,
    #[serde(default)]
    page: usize,
}

pub async fn run_page(
    State(s): State<AppState>,
    viewer: Viewer,
    Path((dag_id, run_id)): Path<(String, String)>,
    Query(q): Query<RunQuery>,
    headers: axum::http::HeaderMap,
) -> Response {
    let run = match s.store.get_run(&dag_id, &run_id).await {
        Ok(r) => r,
        Err(e) => return store_fail(&viewer, e),
    };
    // A finished run's page changes only by hand (audited) or when cleared (reopened).
    let version =
        match live_version(&s, run.version_id, std::slice::from_ref(&run), Watch::Exact).await {
            Ok(v) => v,
            Err(e) => return store_fail(&viewer, e),
        };
    if version_seen(&headers) == Some(version.as_str()) {
        return unchanged();
    }
    let tis = match s.store.task_instances(run.pk).await {
        Ok(t) => t,
        Err(e) => return store_fail(&viewer, e),
    };
    // Counts by state over the whole run, in the order states are listed everywhere.
    let mut counts: Vec<Value> = Vec::new();
    for st in tern_core::TaskState::ALL {
        let n = tis.iter().filter(|t| t.state == *st).count();
        if n > 0 {
            counts.push(json!({"state": st.as_str(), "count": n}));
        }
    }
    let state = q.state.clone().filter(|s| !s.is_empty());
    let needle = q.task.clone().filter(|s| !s.is_empty());
    let matching: Vec<&tern_store::TaskInstance> = tis
        .iter()
        .filter(|t| state.as_deref().is_none_or(|st| t.state.as_str() == st))
        .filter(|t| needle.as_deref().is_none_or(|n| t.task_id.contains(n)))
        .collect();
    let pages = matching.len().div_ceil(RUN_PAGE).max(1);
    let page = q.page.min(pages - 1);
    let shown: Vec<&tern_store::TaskInstance> = matching
        .iter()
        .skip(page * RUN_PAGE)
        .take(RUN_PAGE)
        .copied()
        .collect();
    let labels: Vec<String> = shown.iter().map(|t| t.label()).collect();
    let bars: Vec<draw::Bar<'_>> = shown
        .iter()
        .zip(&labels)
        .map(|(t, label)| draw::Bar {
            task_id: label,
            state: t.state.as_str(),
            start: t.started_at,
            end: t.ended_at,
        })
        .collect();
    let gantt = draw::gantt(&bars, Utc::now());
    let base = format!("/dags/{}/runs/{}", seg(&dag_id), seg(&run_id));
    let api = format!("/api/v1/dags/{}/dagRuns/{}", seg(&dag_id), seg(&run_id));
    let rows: Vec<Value> = shown
        .iter()
        .map(|t| {
            let mut v = json!(t);
            // A mapped task's instances each link to their own page and read `task[i]`.
            v["url"] = json!(format!(
                "{base}/tasks/{}{}",
                seg(&t.task_id),
                instance_query(t.map_index)
            ));
            v["label"] = json!(t.label());
            v["duration"] = json!(duration(t.started_at, t.ended_at));
            v
        })
        .collect();
    // This page's URL with other filters or another page.
    let url_with = |state: Option<&str>, page: usize| {
        let mut parts = Vec::new();
        if let Some(st) = state {
            parts.push(format!("state={}", seg(st)));
        }
        if let Some(n) = &needle {
            parts.push(format!("task={}", seg(n)));
        }
        if page > 0 {
            parts.push(format!("page={page}"));
        }
        if parts.is_empty() {
            base.clone()
        } else {
            format!("{base}?{}", parts.join("&"))
        }
    };
    let counts: Vec<Value> = counts
        .into_iter()
        .map(|mut c| {
            let st = c["state"].as_str().unwrap_or_default().to_string();
            c["url"] = json!(url_with(Some(&st), 0));
            c["on"] = json!(state.as_deref() == Some(st.as_str()));
            c
        })
        .collect();
    render(
        "run.html",
        json!({"me": viewer.context(), "nav": "dags", "run": run, "tasks": rows, "gantt": gantt,
               "dag_url": format!("/dags/{}", seg(&dag_id)), "api": api,
               "duration": duration(run.started_at, run.ended_at),
               "counts": counts, "total": tis.len(), "matching": matching.len(),
               "live_version": version,
               "all_url": url_with(None, 0), "filter": {"state": state, "task": needle},
               "page": page, "pages": pages, "first_shown": page * RUN_PAGE + 1,
               "prev": (page > 0).then(|| url_with(state.as_deref(), page - 1)),
               "next": (page + 1 < pages).then(|| url_with(state.as_deref(), page + 1))}),
    )
}

/// The query naming instance `map_index` of a mapped task in a page's or route's URL (none
/// for a task that is not mapped).
pub(super) fn instance_query(map_index: i64) -> String {
    if map_index >= 0 {
        format!("?map_index={map_index}")
    } else {
        String::new()
    }
}

/// `?map_index=N`: which instance of a mapped task a page shows.
#[derive(serde::Deserialize, Default)]
pub struct InstanceParam {
    #[serde(default)]
    map_index: Option<i64>,
}

pub async fn task_page(
    State(s): State<AppState>,
    viewer: Viewer,
    Path((dag_id, run_id, task_id)): Path<(String, String, String)>,
    q: Result<axum::extract::Query<InstanceParam>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let run = match s.store.get_run(&dag_id, &run_id).await {
        Ok(r) => r,
        Err(e) => return store_fail(&viewer, e),
    };
    let all = match s.store.task_instances_of(run.pk, &task_id).await {
        Ok(all) if !all.is_empty() => all,
        Ok(_) => {
            return store_fail(
                &viewer,
                tern_store::StoreError::NotFound(format!("the run has no task {task_id:?}")),
            )
        }
        Err(e) => return store_fail(&viewer, e),
    };
    // A mapped task's page shows one instance (the first unless `map_index` names one) and
    // lists them all.
    let wanted = q.ok().and_then(|q| q.0.map_index);
    let Some(ti) = all
        .iter()
        .find(|t| wanted.is_none_or(|i| t.map_index == i))
        .cloned()
    else {
        return store_fail(
            &viewer,
            tern_store::StoreError::NotFound(format!(
                "task {task_id:?} has no instance with map_index {}",
                wanted.unwrap_or_default()
            )),
        );
    };
    let page = format!(
        "/dags/{}/runs/{}/tasks/{}",
        seg(&dag_id),
        seg(&run_id),
        seg(&task_id)
    );
    let instances: Vec<Value> = all
        .iter()
        .filter(|t| t.map_index >= 0)
        .map(|t| {
            json!({"map_index": t.map_index, "state": t.state, "try_number": t.try_number,
                   "duration": duration(t.started_at, t.ended_at), "note": t.note,
                   "current": t.id == ti.id,
                   "url": format!("{page}{}", instance_query(t.map_index))})
        })
        .collect();
    let map_values = if ti.map_index >= 0 {
        s.store.map_values(ti.id).await.unwrap_or_default()
    } else {
        Map::new()
    };
    let tries = s.store.task_tries(ti.id).await.unwrap_or_default();
    let run_outputs = s.store.run_outputs(run.pk).await.unwrap_or_default();
    let outputs = s.store.instance_outputs(ti.id).await.unwrap_or_default();
    let spec = s.store.spec(run.version_id).await.ok();
    let task = spec.as_ref().and_then(|sp| sp.task(&task_id).cloned());
    let task_spec = task
        .as_ref()
        .map(|t| serde_json::to_string_pretty(&t.kind).unwrap_or_default());
    let rendered = match (&spec, task) {
        (Some(spec), Some(task)) => {
            let var = preview_variables(&s, &task).await;
            rendered_fields(&run, spec, &ti, task, run_outputs, map_values.clone(), &var)
        }
        _ => Vec::new(),
    };
    let api = format!("/api/v1/dags/{}/dagRuns/{}", seg(&dag_id), seg(&run_id));
    let instance_q = instance_query(ti.map_index);
    let tries_json: Vec<Value> = tries
        .iter()
        .map(|t| {
            json!({"try_number": t.try_number, "state": t.state, "worker": t.worker,
                   "started_at": t.started_at, "ended_at": t.ended_at, "exit_code": t.exit_code,
                   "note": t.note, "duration": duration(Some(t.started_at), t.ended_at),
                   "log_stream": format!("{api}/taskInstances/{}/logs/{}/stream{instance_q}", seg(&task_id), t.try_number),
                   "log_download": format!("{api}/taskInstances/{}/logs/{}/download{instance_q}", seg(&task_id), t.try_number)})
        })
        .collect();
    render(
        "task.html",
        json!({"me": viewer.context(), "nav": "dags", "run": run, "ti": ti, "tries": tries_json,
               "outputs": outputs, "task_spec": task_spec, "api": api, "rendered": rendered,
               "task_seg": seg(&task_id), "instances": instances, "map_values": map_values,
               "instance_q": instance_q,
               "run_url": format!("/dags/{}/runs/{}", seg(&dag_id), seg(&run_id)),
               "dag_url": format!("/dags/{}", seg(&dag_id))}),
    )
}

/// `var` for the preview of a task's templates: the control plane's variables its templates
/// name, a secret one shown as `***` (a site agent's own variable wins when the task runs).
async fn preview_variables(s: &AppState, task: &tern_core::TaskSpec) -> Value {
    let Some(secrets) = &s.secrets else {
        return json!({"value": {}, "json": {}});
    };
    let mut vars = crate::variables::for_task(&s.store, secrets, task)
        .await
        .unwrap_or_default();
    for v in vars.values_mut().filter(|v| v.secret) {
        v.value = "***".into();
    }
    tern_worker::variables::Variables::default()
        .with_fallback(&vars)
        .template_value()
}

/// The task's templated fields as its current try sees them (`{{ conn.… }}` is left to the
/// agent, which alone holds site connections): `[{field, value}]` or `[{field, error}]`.
fn rendered_fields(
    run: &tern_store::DagRun,
    spec: &tern_core::DagSpec,
    ti: &tern_store::TaskInstance,
    task: tern_core::TaskSpec,
    outputs: std::collections::BTreeMap<String, Map<String, Value>>,
    map_values: Map<String, Value>,
    var: &Value,
) -> Vec<Value> {
    let kind = serde_json::to_value(&task.kind).unwrap_or_default();
    let a = tern_protocol::Assignment {
        ti_id: ti.id,
        attempt: String::new(),
        dag_id: run.dag_id.clone(),
        run_id: run.run_id.clone(),
        task_id: ti.task_id.clone(),
        try_number: ti.try_number.max(1),
        max_tries: ti.max_tries,
        task,
        context: crate::gateway::run_context(run, spec, outputs),
        lease_ms: 0,
        connections: Default::default(),
        external_state: None,
        variables: Default::default(),
        map_index: u32::try_from(ti.map_index).ok(),
        map_values,
    };
    let r = tern_worker::template::Renderer::new(&a, &json!({}), var);
    let mut out = Vec::new();
    walk(&kind, "", &mut |field, text| {
        if tern_core::spec::may_hold_templates(text) {
            out.push(match r.render(field, text) {
                Ok(v) => json!({"field": field, "value": v}),
                Err(e) => json!({"field": field, "error": e.message}),
            });
        }
    });
    out
}

fn walk(v: &Value, path: &str, f: &mut impl FnMut(&str, &str)) {
    match v {
        Value::String(s) => f(path, s),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                walk(x, &format!("{path}[{i}]"), f);
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(x, &p, f);
            }
        }
        _ => {}
    }
}
