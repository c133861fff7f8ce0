//! The validated, serialisable description of a DAG and its tasks.
//!
//! A [`DagSpec`] is what a DAG file evaluates to after validation. It is stored as JSON in the
//! metadata store (one row per DAG version), shipped to agents inside task assignments, and is
//! the only thing the scheduler reads about a DAG. Its JSON form is stable: add fields with
//! `#[serde(default)]` so older versions still load.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::schedule::Schedule;
use crate::trigger::TriggerRule;

/// Queue a task runs on when it names none: served by the control plane's local agent.
pub const DEFAULT_QUEUE: &str = "default";
/// Pool a task takes a slot of when it names none.
pub const DEFAULT_POOL: &str = "default_pool";

/// One DAG as declared by `dag(...)` in a DAG file, with its tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DagSpec {
    pub dag_id: String,
    /// Path of the DAG file, relative to the DAG folder.
    pub file: String,
    /// Line of the `dag(...)` call.
    pub line: u32,
    pub schedule: Schedule,
    /// IANA time zone name the schedule and dates are read in (e.g. `Europe/Madrid`).
    pub timezone: String,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
    pub catchup: bool,
    #[serde(default)]
    pub params: BTreeMap<String, ParamSpec>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub max_active_runs: u32,
    pub max_active_tasks: u32,
    /// Connections notified when a run of this DAG ends failed (webhook or mail).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<String>,
    /// Connections notified when a run of this DAG ends successfully.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_success: Vec<String>,
    /// Connections notified when a task of this DAG goes up for retry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_retry: Vec<String>,
    /// A run still going this long after it started fails; its unfinished tasks are skipped
    /// (running ones stopped), as Airflow's `dagrun_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dagrun_timeout_ms: Option<u64>,
    /// Pause the DAG once this many runs in a row have failed (0: never), as Airflow's
    /// `max_consecutive_failed_dag_runs`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_consecutive_failed_dag_runs: u32,
    /// Tasks in a topological order: every task comes after all of its upstream tasks.
    pub tasks: Vec<TaskSpec>,
    /// The task groups, outer groups before the groups inside them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupSpec>,
    /// Lookups derived from `tasks`, computed on first use (never stored or compared).
    #[serde(skip)]
    pub index: SpecIndex,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Lookups derived from a spec's tasks (position by id, direct downstream tasks, effective
/// priorities), computed once on first use: the scheduler asks them for every result, and
/// recomputing them made each result cost as much as the DAG is large. A spec is not changed
/// once its index is in use (the store hands out shared, immutable specs); a clone starts with
/// an empty index.
#[derive(Default)]
pub struct SpecIndex(std::sync::OnceLock<Index>);

struct Index {
    position: HashMap<String, usize>,
    downstream: HashMap<String, Vec<String>>,
    priorities: HashMap<String, i64>,
}

impl Clone for SpecIndex {
    fn clone(&self) -> Self {
        SpecIndex::default()
    }
}

impl PartialEq for SpecIndex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for SpecIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpecIndex")
    }
}

/// A declared DAG parameter: its default and, optionally, the type a value must have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamSpec {
    pub default: serde_json::Value,
    /// One of `string`, `integer`, `number`, `boolean`, `array`, `object`; `None` accepts anything.
    #[serde(default)]
    pub r#type: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Constraints on a value given at trigger time (checked on every trigger).
    #[serde(default, skip_serializing_if = "ParamRules::is_empty")]
    pub rules: ParamRules,
}

/// What a param's value must satisfy, as Airflow's `Param` (JSON Schema) has it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParamRules {
    /// The value must be one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#enum: Option<Vec<serde_json::Value>>,
    /// A string value must match this regular expression whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// A string value may have at most this many characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u64>,
}

impl ParamRules {
    pub fn is_empty(&self) -> bool {
        self.r#enum.is_none() && self.pattern.is_none() && self.max_length.is_none()
    }
}

/// A task group: a name for a set of tasks (and groups), shown together in the UI, linked as a
/// whole (`g >> t`) and followed as a whole by a branch. Its id is its parent's id, a dot, and
/// its own name (`extract.tables`), and its tasks' ids start with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSpec {
    pub group_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tooltip: Option<String>,
}

/// One task of a DAG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub task_id: String,
    /// Line of the call that declared the task.
    pub line: u32,
    #[serde(flatten)]
    pub kind: TaskKind,
    #[serde(default)]
    pub upstream: Vec<String>,
    pub trigger_rule: TriggerRule,
    pub retries: u32,
    pub retry_delay_ms: u64,
    pub retry_exponential_backoff: bool,
    pub max_retry_delay_ms: Option<u64>,
    pub execution_timeout_ms: Option<u64>,
    pub queue: String,
    pub pool: String,
    /// The declared weight. The scheduler orders by [`DagSpec::effective_priorities`].
    pub priority_weight: i64,
    /// Exit codes that end a try `skipped` instead of failed (shell, python, container; a
    /// DAG file's shell and python tasks default to `[99]`, as Airflow's `BashOperator`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_on_exit_code: Vec<i32>,
    /// What a successful try decides about the tasks downstream: a branch or a short circuit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<crate::flow::Flow>,
    /// The innermost group the task belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// A setup task: creates what the work needs; its teardowns run when it succeeded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub setup: bool,
    /// A teardown task: cleans up after the work (trigger rule `all_done_setup_success`); its
    /// failure does not fail the run unless `on_failure_fail_dagrun`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub teardown: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_failure_fail_dagrun: bool,
    /// Runs only once the same task succeeded or was skipped in the DAG's previous run (by
    /// logical date), as Airflow's `depends_on_past`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub depends_on_past: bool,
    /// Also waits for the previous run's direct downstream tasks of it (implies
    /// `depends_on_past`), as Airflow's `wait_for_downstream`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait_for_downstream: bool,
    /// A mapped task: one instance per element set, made when the task is ready to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expand: Option<crate::mapping::Expand>,
    /// Most instances of this task queued or running at once across the DAG's runs (a mapped
    /// task's instances count one by one), as Airflow's `max_active_tis_per_dag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_active_tis_per_dag: Option<u32>,
}

/// What a task does. Fields marked *templated* are rendered with Jinja where the task runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskKind {
    /// Runs `cmd` (templated) with `sh -c`.
    Shell {
        cmd: String,
        /// Extra environment variables; values are templated.
        #[serde(default)]
        env: BTreeMap<String, String>,
        #[serde(default)]
        cwd: Option<String>,
        /// Run under bubblewrap.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sandbox: Option<crate::Sandbox>,
    },
    /// Runs Python source with the configured interpreter. `code` holds the inline code, or the
    /// content of the `script` file read by the DAG loader (not by DAG code) at load time.
    Python {
        code: String,
        /// The script file the code came from, relative to the DAG folder, if any.
        #[serde(default)]
        script: Option<String>,
        /// Arguments (templated).
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        #[serde(default)]
        cwd: Option<String>,
        /// Run under bubblewrap.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sandbox: Option<crate::Sandbox>,
        /// Packages to install (pip requirement specifiers): the task runs in a virtual
        /// environment with them, built once per set by the agent that runs it.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        requirements: Vec<String>,
        /// `3.12`: run with `python3.12` (in a virtual environment) instead of the agent's
        /// default interpreter.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        python_version: Option<String>,
    },
    /// Does nothing and succeeds: a join or a placeholder.
    Empty,
    /// Done by the scheduler like `empty`; skips its direct downstream tasks unless the run is
    /// the latest scheduled one or was triggered by hand (Airflow's `LatestOnlyOperator`).
    LatestOnly,
    /// Runs SQL statements on a Postgres, MySQL/MariaDB or SQLite connection.
    Sql(SqlTask),
    /// Streams a query's rows into an object store as CSV, JSON lines or Parquet.
    SqlToLake(SqlToLakeTask),
    /// Calls an HTTP endpoint.
    Http(HttpTask),
    /// Runs an image with podman or docker.
    Container(crate::ContainerTask),
    /// Waits for a condition, poking at intervals without holding a slot in between.
    Sensor(crate::sensor::SensorTask),
}

/// The fields of a `sql` task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SqlTask {
    /// Connection name.
    pub conn: String,
    /// Statements, run in order (templated).
    pub sql: Vec<String>,
    /// Values bound to the placeholders (`$1` on Postgres, `?` elsewhere); strings are
    /// templated. Never spliced into the SQL text.
    #[serde(default)]
    pub parameters: Vec<serde_json::Value>,
    /// Run all statements in one transaction (default); otherwise each commits alone.
    #[serde(default = "yes")]
    pub transaction: bool,
    /// Publish the first row of the last statement as outputs (column → value).
    #[serde(default)]
    pub output_first_row: bool,
}

/// The fields of a `sql_to_lake` task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SqlToLakeTask {
    /// Connection of the source database.
    pub conn: String,
    /// The query (templated); runs in a read-only transaction.
    pub sql: String,
    #[serde(default)]
    pub parameters: Vec<serde_json::Value>,
    /// Connection of the object store: `s3://bucket?endpoint=…&region=…` or
    /// `file:///folder`.
    pub target_conn: String,
    /// Object path inside the target (templated), e.g. `exports/{{ ds }}/customers.csv`.
    pub target: String,
    pub format: ExportFormat,
    #[serde(default)]
    pub csv: CsvOptions,
    /// Parquet: the compression codec of the column chunks. Left out of the serialized spec when
    /// default, so specs written before it keep their content hash.
    #[serde(default, skip_serializing_if = "ParquetCompression::is_default")]
    pub compression: ParquetCompression,
}

/// The fields of an `http` task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpTask {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE`, `HEAD`.
    pub method: String,
    /// Absolute URL, or a path joined to the connection's URL (templated).
    pub url: String,
    /// Connection giving the base URL and the credentials (login/password: basic auth;
    /// extra `token`: bearer).
    #[serde(default)]
    pub conn: Option<String>,
    /// Header values are templated.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request body (templated).
    #[serde(default)]
    pub body: Option<String>,
    /// Statuses that count as success; empty means any 2xx.
    #[serde(default)]
    pub expected_status: Vec<u16>,
    /// Largest response body kept as the `body` output, in bytes.
    #[serde(default = "default_body_cap")]
    pub max_body_bytes: u64,
    /// Object-store connection to save the whole answer to, instead of the `body` output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_to_conn: Option<String>,
    /// Object path inside `save_to_conn` (templated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_to: Option<String>,
}

fn yes() -> bool {
    true
}

fn default_body_cap() -> u64 {
    64 * 1024
}

/// File format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    Csv,
    Jsonl,
    Parquet,
}

impl ExportFormat {
    pub const NAMES: &'static [&'static str] = &["csv", "jsonl", "parquet"];

    pub fn parse(s: &str) -> Option<ExportFormat> {
        match s {
            "csv" => Some(ExportFormat::Csv),
            "jsonl" | "json_lines" | "ndjson" => Some(ExportFormat::Jsonl),
            "parquet" => Some(ExportFormat::Parquet),
            _ => None,
        }
    }
}

/// Compression codec of a Parquet export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParquetCompression {
    #[default]
    Snappy,
    Zstd,
    None,
}

impl ParquetCompression {
    pub const NAMES: &'static [&'static str] = &["snappy", "zstd", "none"];

    pub fn parse(s: &str) -> Option<ParquetCompression> {
        match s {
            "snappy" => Some(ParquetCompression::Snappy),
            "zstd" => Some(ParquetCompression::Zstd),
            "none" | "uncompressed" => Some(ParquetCompression::None),
            _ => None,
        }
    }

    fn is_default(&self) -> bool {
        *self == ParquetCompression::default()
    }
}

/// How CSV is written (RFC 4180 quoting).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CsvOptions {
    /// First line names the columns.
    pub header: bool,
    /// One ASCII character.
    pub delimiter: char,
    /// One ASCII character.
    pub quote: char,
    /// `"\n"` or `"\r\n"`.
    pub crlf: bool,
    /// Text written for NULL.
    pub null_text: String,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            header: true,
            delimiter: ',',
            quote: '"',
            crlf: false,
            null_text: String::new(),
        }
    }
}

/// Whether `text` (a template's source, or a whole task's spec as JSON) may hold a template
/// (`{{` or `{%`). Text with none renders to itself, so it need not be rendered, and what only
/// templates read (a run's outputs) need not be gathered for a task without any.
pub fn may_hold_templates(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

impl TaskKind {
    pub fn name(&self) -> &'static str {
        match self {
            TaskKind::Shell { .. } => "shell",
            TaskKind::Python { .. } => "python",
            TaskKind::Empty => "empty",
            TaskKind::LatestOnly => "latest_only",
            TaskKind::Sql(_) => "sql",
            TaskKind::SqlToLake(_) => "sql_to_lake",
            TaskKind::Http(_) => "http",
            TaskKind::Sensor(s) => s.check.kind_name(),
            TaskKind::Container(_) => "container",
        }
    }

    /// The connections the task names, for whoever must resolve them.
    pub fn connection_names(&self) -> Vec<&str> {
        match self {
            TaskKind::Sql(t) => vec![&t.conn],
            TaskKind::SqlToLake(t) => vec![&t.conn, &t.target_conn],
            TaskKind::Http(t) => t
                .conn
                .iter()
                .chain(&t.save_to_conn)
                .map(String::as_str)
                .collect(),
            TaskKind::Sensor(s) => s.check.connection_names(),
            _ => Vec::new(),
        }
    }
}

impl DagSpec {
    /// What limits the DAG's schedule: its time zone (UTC if the name is unknown, which
    /// validation prevents), start and end dates, catchup.
    pub fn schedule_bounds(&self) -> crate::schedule::ScheduleBounds {
        crate::schedule::ScheduleBounds {
            tz: crate::schedule::parse_timezone(&self.timezone).unwrap_or(chrono_tz::UTC),
            start_date: self.start_date,
            end_date: self.end_date,
            catchup: self.catchup,
        }
    }

    pub fn task(&self, task_id: &str) -> Option<&TaskSpec> {
        self.index()
            .position
            .get(task_id)
            .and_then(|i| self.tasks.get(*i))
            .filter(|t| t.task_id == task_id)
    }

    /// Whether a run whose task instances all ended in `states` failed, as Airflow decides:
    /// a leaf task failed or had an upstream failure. Teardowns do not count (a work task
    /// whose only downstream tasks are teardowns is a leaf), unless `on_failure_fail_dagrun`.
    pub fn run_failed(&self, states: &crate::state::RunStates) -> bool {
        let down = self.downstream_map();
        let failed = |id: &str| states.any_failed(id);
        self.tasks.iter().any(|t| {
            if t.teardown {
                return t.on_failure_fail_dagrun && failed(&t.task_id);
            }
            let leaf = down
                .get(t.task_id.as_str())
                .is_none_or(|d| d.iter().all(|x| self.task(x).is_some_and(|x| x.teardown)));
            leaf && failed(&t.task_id)
        })
    }

    /// Direct downstream task ids of every task.
    pub fn downstream_map(&self) -> &HashMap<String, Vec<String>> {
        &self.index().downstream
    }

    /// Priority of each task as Airflow's default `downstream` weight rule computes it: the
    /// task's own weight plus the weights of every task downstream of it, so long chains start
    /// first.
    pub fn effective_priorities(&self) -> &HashMap<String, i64> {
        &self.index().priorities
    }

    fn index(&self) -> &Index {
        self.index.0.get_or_init(|| {
            let position: HashMap<String, usize> = self
                .tasks
                .iter()
                .enumerate()
                .map(|(i, t)| (t.task_id.clone(), i))
                .collect();
            let mut downstream: HashMap<String, Vec<String>> = HashMap::new();
            for t in &self.tasks {
                downstream.entry(t.task_id.clone()).or_default();
                for up in &t.upstream {
                    downstream
                        .entry(up.clone())
                        .or_default()
                        .push(t.task_id.clone());
                }
            }
            let priorities = self.compute_priorities(&position, &downstream);
            Index {
                position,
                downstream,
                priorities,
            }
        })
    }

    fn compute_priorities(
        &self,
        position: &HashMap<String, usize>,
        down: &HashMap<String, Vec<String>>,
    ) -> HashMap<String, i64> {
        let mut out: HashMap<String, i64> = HashMap::new();
        // Tasks are topologically ordered, so walking backwards sees downstream tasks first;
        // the set of descendants is collected per task to count shared descendants once.
        let mut descendants: HashMap<&str, std::collections::BTreeSet<&str>> = HashMap::new();
        for t in self.tasks.iter().rev() {
            let mut set = std::collections::BTreeSet::new();
            for d in down.get(t.task_id.as_str()).into_iter().flatten() {
                set.insert(d.as_str());
                if let Some(ds) = descendants.get(d.as_str()) {
                    set.extend(ds.iter().copied());
                }
            }
            let weight = t.priority_weight
                + set
                    .iter()
                    .filter_map(|d| position.get(*d).map(|i| &self.tasks[*i]))
                    .map(|d| d.priority_weight)
                    .sum::<i64>();
            out.insert(t.task_id.clone(), weight);
            descendants.insert(t.task_id.as_str(), set);
        }
        out
    }

    /// A stable content hash of the spec: a new DAG version is stored when it changes.
    pub fn content_hash(&self) -> String {
        let json = serde_json::to_string(self).expect("a DagSpec always serialises");
        // FNV-1a 64 twice with different seeds: stable across builds, no extra dependency.
        let h1 = fnv1a(json.as_bytes(), 0xcbf2_9ce4_8422_2325);
        let h2 = fnv1a(json.as_bytes(), 0x8422_2325_cbf2_9ce4);
        format!("{h1:016x}{h2:016x}")
    }
}

fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut h = seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl TaskSpec {
    /// A task with the defaults Airflow users expect: no retries, `all_success`, the default
    /// queue and pool, weight 1.
    pub fn new(task_id: impl Into<String>, kind: TaskKind) -> Self {
        TaskSpec {
            task_id: task_id.into(),
            line: 0,
            kind,
            upstream: Vec::new(),
            trigger_rule: TriggerRule::AllSuccess,
            retries: 0,
            retry_delay_ms: 300_000,
            retry_exponential_backoff: false,
            max_retry_delay_ms: None,
            execution_timeout_ms: None,
            queue: DEFAULT_QUEUE.to_string(),
            pool: DEFAULT_POOL.to_string(),
            priority_weight: 1,
            skip_on_exit_code: Vec::new(),
            flow: None,
            group: None,
            setup: false,
            teardown: false,
            on_failure_fail_dagrun: false,
            depends_on_past: false,
            wait_for_downstream: false,
            expand: None,
            max_active_tis_per_dag: None,
        }
    }

    /// Whether the task is in group `group_id`, directly or through a group inside it.
    pub fn in_group(&self, group_id: &str) -> bool {
        self.group.as_deref().is_some_and(|g| {
            g == group_id
                || (g.len() > group_id.len()
                    && g.starts_with(group_id)
                    && g.as_bytes()[group_id.len()] == b'.')
        })
    }

    /// Whether a try that exited with `code` is skipped rather than failed.
    pub fn skips_on_exit(&self, code: i32) -> bool {
        code != 0 && self.skip_on_exit_code.contains(&code)
    }

    /// Whether the scheduler completes the task itself, without an agent.
    pub fn done_by_scheduler(&self) -> bool {
        matches!(self.kind, TaskKind::Empty | TaskKind::LatestOnly)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dag(tasks: Vec<TaskSpec>) -> DagSpec {
        DagSpec {
            dag_id: "d".into(),
            file: "d.star".into(),
            line: 1,
            schedule: Schedule::None,
            timezone: "UTC".into(),
            start_date: None,
            end_date: None,
            catchup: false,
            params: BTreeMap::new(),
            tags: vec![],
            description: None,
            max_active_runs: 16,
            max_active_tasks: 16,
            on_failure: vec![],
            on_success: vec![],
            on_retry: vec![],
            dagrun_timeout_ms: None,
            max_consecutive_failed_dag_runs: 0,
            tasks,
            groups: Vec::new(),
            index: Default::default(),
        }
    }

    fn task(id: &str, up: &[&str]) -> TaskSpec {
        let mut t = TaskSpec::new(id, TaskKind::Empty);
        t.upstream = up.iter().map(|s| s.to_string()).collect();
        t
    }

    #[test]
    fn a_template_anywhere_in_a_kind_is_seen() {
        let shell = |cmd: &str, env: &[(&str, &str)], cwd: Option<&str>| {
            serde_json::to_string(&TaskSpec::new(
                "t",
                TaskKind::Shell {
                    cmd: cmd.into(),
                    env: env
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    cwd: cwd.map(str::to_string),
                    sandbox: None,
                },
            ))
            .unwrap()
        };
        let empty = serde_json::to_string(&TaskSpec::new("t", TaskKind::Empty)).unwrap();
        assert!(!may_hold_templates(&shell(
            "echo plain {} text",
            &[("A", "b")],
            Some("/tmp")
        )));
        assert!(!may_hold_templates(&empty));
        assert!(may_hold_templates(&shell(
            "echo {{ outputs.a.rows }}",
            &[],
            None
        )));
        assert!(may_hold_templates(&shell(
            "true",
            &[("ROWS", "{{ outputs.a.rows }}")],
            None
        )));
        assert!(may_hold_templates(&shell("true", &[], Some("/d/{{ ds }}"))));
        assert!(may_hold_templates(&shell(
            "{% if true %}x{% endif %}",
            &[],
            None
        )));
    }

    #[test]
    fn a_teardown_does_not_decide_the_run_unless_told_to() {
        use crate::state::TaskState::*;
        let mut setup = task("create", &[]);
        setup.setup = true;
        let work = task("work", &["create"]);
        let mut teardown = task("delete", &["create", "work"]);
        teardown.teardown = true;
        let mut d = dag(vec![setup, work, teardown]);
        let states = |w, t| {
            let mut s = crate::state::RunStates::default();
            s.push("create".to_string(), Success);
            s.push("work".to_string(), w);
            s.push("delete".to_string(), t);
            s
        };
        assert!(
            !d.run_failed(&states(Success, Failed)),
            "a failed teardown alone"
        );
        assert!(
            d.run_failed(&states(Failed, Success)),
            "the work before the teardown is a leaf"
        );
        assert!(!d.run_failed(&states(Success, Success)));
        d.tasks[2].on_failure_fail_dagrun = true;
        let d: DagSpec = serde_json::from_value(serde_json::to_value(&d).unwrap()).unwrap();
        assert!(
            d.run_failed(&states(Success, Failed)),
            "on_failure_fail_dagrun"
        );
    }

    #[test]
    fn downstream_weight_rule_counts_shared_descendants_once() {
        // a -> b -> d, a -> c -> d
        let d = dag(vec![
            task("a", &[]),
            task("b", &["a"]),
            task("c", &["a"]),
            task("d", &["b", "c"]),
        ]);
        let p = d.effective_priorities();
        assert_eq!(p["d"], 1);
        assert_eq!(p["b"], 2);
        assert_eq!(p["c"], 2);
        assert_eq!(p["a"], 4);
    }

    #[test]
    fn spec_json_round_trips_and_hash_tracks_content() {
        let mut d = dag(vec![
            task("a", &[]),
            TaskSpec::new(
                "s",
                TaskKind::Shell {
                    cmd: "echo hi".into(),
                    env: BTreeMap::new(),
                    cwd: None,
                    sandbox: None,
                },
            ),
        ]);
        let json = serde_json::to_string(&d).unwrap();
        let back: DagSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        let h = d.content_hash();
        assert_eq!(h, back.content_hash());
        d.tasks[1].retries = 3;
        assert_ne!(h, d.content_hash());
    }
}
