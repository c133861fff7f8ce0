//! Browsing across DAGs: the runs and task instances of every DAG, filtered by DAG, state,
//! queue and logical-date range, newest first, a page at a time — the on-call's first page
//! ("what is failing right now"). Each read is one statement whose conditions are only the
//! filters given, so the planner can use the indexes of migration 0013.

use chrono::{DateTime, Utc};
use sqlx::Row;
use tern_core::{RunState, TaskState};

use crate::runs::{run_row, RUN_COLUMNS};
use crate::tasks::{ti_row, TI_COLUMNS};
use crate::time::{from_ms, to_ms};
use crate::{DagRun, Result, Store, TaskInstance};

/// What to browse: every filter left `None` matches everything.
#[derive(Debug, Clone)]
pub struct BrowseFilter<S> {
    pub dag_id: Option<String>,
    pub state: Option<S>,
    /// Task instances only: the queue (the site's agents serve it).
    pub queue: Option<String>,
    /// Runs (or the runs of task instances) whose logical date is at or after this.
    pub since: Option<DateTime<Utc>>,
    /// … and at or before this.
    pub until: Option<DateTime<Utc>>,
    pub limit: i64,
    pub offset: i64,
}

impl<S> Default for BrowseFilter<S> {
    fn default() -> Self {
        BrowseFilter {
            dag_id: None,
            state: None,
            queue: None,
            since: None,
            until: None,
            limit: 100,
            offset: 0,
        }
    }
}

/// A task instance with its run's logical date, as the browse page lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BrowsedInstance {
    #[serde(flatten)]
    pub instance: TaskInstance,
    pub logical_date: DateTime<Utc>,
}

enum Bind {
    Text(String),
    Int(i64),
}

/// The `WHERE` of a browse query: the conditions given, with their values in order.
struct Conditions {
    sql: Vec<String>,
    binds: Vec<Bind>,
}

impl Conditions {
    fn new() -> Self {
        Conditions {
            sql: Vec::new(),
            binds: Vec::new(),
        }
    }

    fn add(&mut self, column: &str, op: &str, value: Bind) {
        self.binds.push(value);
        self.sql
            .push(format!("{column} {op} ${}", self.binds.len()));
    }

    /// The filters `f` has in common for runs and task instances: `run` names the runs'
    /// table, `own` the table whose DAG and state are filtered.
    fn of<S>(f: &BrowseFilter<S>, state: Option<&str>, run: &str, own: &str) -> Self {
        let mut c = Conditions::new();
        if let Some(d) = &f.dag_id {
            c.add(&format!("{own}.dag_id"), "=", Bind::Text(d.clone()));
        }
        if let Some(s) = state {
            // Written into the statement rather than bound, so that the planner can use the
            // partial index of that one state (a state is one of a closed set of words).
            debug_assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            c.sql.push(format!("{own}.state = '{s}'"));
        }
        if let Some(t) = f.since {
            c.add(&format!("{run}.logical_date"), ">=", Bind::Int(to_ms(t)));
        }
        if let Some(t) = f.until {
            c.add(&format!("{run}.logical_date"), "<=", Bind::Int(to_ms(t)));
        }
        c
    }

    fn where_clause(&self) -> String {
        if self.sql.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.sql.join(" AND "))
        }
    }

    fn query<'q>(
        &'q self,
        sql: &'q str,
        limit: i64,
        offset: i64,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        let mut q = sqlx::query(sql);
        for b in &self.binds {
            q = match b {
                Bind::Text(t) => q.bind(t.as_str()),
                Bind::Int(i) => q.bind(*i),
            };
        }
        q.bind(limit).bind(offset)
    }
}

impl Store {
    /// Runs of every DAG (or one) matching `f`, newest logical date first.
    pub async fn browse_runs(&self, f: &BrowseFilter<RunState>) -> Result<Vec<DagRun>> {
        let c = Conditions::of(f, f.state.map(RunState::as_str), "dag_runs", "dag_runs");
        let n = c.binds.len();
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM dag_runs {} ORDER BY logical_date DESC, id DESC LIMIT ${} OFFSET ${}",
            c.where_clause(),
            n + 1,
            n + 2
        );
        c.query(&sql, f.limit, f.offset)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(run_row)
            .collect()
    }

    /// Task instances of every DAG (or one) matching `f`, newest first (by creation: the
    /// newest runs' instances come first).
    pub async fn browse_task_instances(
        &self,
        f: &BrowseFilter<TaskState>,
    ) -> Result<Vec<BrowsedInstance>> {
        let mut c = Conditions::of(f, f.state.map(TaskState::as_str), "r", "ti");
        if let Some(q) = &f.queue {
            c.add("ti.queue", "=", Bind::Text(q.clone()));
        }
        let n = c.binds.len();
        let columns: Vec<String> = TI_COLUMNS
            .split(',')
            .map(|col| format!("ti.{}", col.trim()))
            .collect();
        let sql = format!(
            "SELECT {}, r.logical_date AS run_logical_date FROM task_instances ti \
             JOIN dag_runs r ON r.id = ti.run_pk {} ORDER BY ti.id DESC LIMIT ${} OFFSET ${}",
            columns.join(", "),
            c.where_clause(),
            n + 1,
            n + 2
        );
        c.query(&sql, f.limit, f.offset)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(BrowsedInstance {
                    instance: ti_row(r)?,
                    logical_date: from_ms(r.try_get("run_logical_date")?),
                })
            })
            .collect()
    }
}
