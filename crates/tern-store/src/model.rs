//! Rows of the metadata store as typed values.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tern_core::{DataInterval, RunState, RunType, TaskState};

/// A DAG as the store knows it: identity, latest version and switches.
#[derive(Debug, Clone, Serialize)]
pub struct DagRow {
    pub dag_id: String,
    pub file: String,
    pub is_paused: bool,
    pub is_active: bool,
    pub latest_version_id: i64,
    pub version: i64,
    pub schedule: String,
    pub timezone: String,
    pub last_parsed_at: DateTime<Utc>,
}

/// A file that failed to load, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportErrorRow {
    pub file: String,
    pub line: u32,
    pub message: String,
}

/// One execution of a DAG.
#[derive(Debug, Clone, Serialize)]
pub struct DagRun {
    #[serde(skip)]
    pub pk: i64,
    pub dag_id: String,
    pub run_id: String,
    pub version_id: i64,
    pub run_type: RunType,
    pub state: RunState,
    pub logical_date: DateTime<Utc>,
    pub data_interval: DataInterval,
    pub conf: serde_json::Value,
    pub params: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// One task of one DAG run.
#[derive(Debug, Clone, Serialize)]
pub struct TaskInstance {
    pub id: i64,
    #[serde(skip)]
    pub run_pk: i64,
    pub dag_id: String,
    pub run_id: String,
    pub task_id: String,
    pub state: TaskState,
    pub try_number: u32,
    pub max_tries: u32,
    pub queue: String,
    pub pool: String,
    pub priority: i64,
    pub ready_at: Option<DateTime<Utc>>,
    pub queued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub attempt: Option<String>,
    pub worker: Option<String>,
    /// Why the instance is in its state (a failure reason, what it waits for).
    pub note: Option<String>,
    /// The instance's index among its mapped task's instances; -1 for a task that is not
    /// mapped (or not expanded yet), as in Airflow.
    pub map_index: i64,
}

impl TaskInstance {
    /// How the instance is named to people: `load`, or `load[3]` for instance 3 of a mapped
    /// task.
    pub fn label(&self) -> String {
        tern_core::mapping::instance_label(&self.task_id, self.map_index)
    }
}

/// One try of a task instance.
#[derive(Debug, Clone, Serialize)]
pub struct TaskTry {
    pub try_number: u32,
    pub state: TaskState,
    pub worker: Option<String>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i32>,
    pub note: Option<String>,
    pub log_path: String,
}

/// A task instance an agent has just claimed, with its attempt token and lease.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub ti: TaskInstance,
    pub attempt: String,
    pub log_path: String,
}

/// What an agent reports when a try ends.
#[derive(Debug, Clone, Default)]
pub struct TryResult {
    pub success: bool,
    /// Whether a failure may succeed on another try; permanent failures skip retries.
    pub retryable: bool,
    pub exit_code: Option<i32>,
    pub note: Option<String>,
    pub outputs: serde_json::Map<String, serde_json::Value>,
    /// A sensor's condition did not hold: poke again after this long, on the same try.
    pub reschedule_after: Option<std::time::Duration>,
}

/// What recording a result changed.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// False when the attempt was no longer current (fenced): the result changed nothing.
    pub accepted: bool,
    /// Whether any task instance became queued, so agents should be woken.
    pub queued_any: bool,
    /// The queues that got queued work.
    pub queued_queues: Vec<String>,
    /// Whether the run finished.
    pub run_finished: bool,
    /// Whether admission was left to the admitter: another transaction held the admission
    /// lock (PostgreSQL), so the result did not wait for it. Call [`crate::Store::admit_now`]
    /// (the server's admitter does) to queue what this result made ready.
    pub admission_deferred: bool,
    /// Whether the attempt failed with tries left: a retry is due later.
    pub retry_pending: bool,
    /// How long the ended attempt ran (for the task-duration metric).
    pub ran_for: Option<std::time::Duration>,
}

impl Applied {
    /// A claim made in the result's transaction took everything queued on `queues`: no agent
    /// needs waking for them.
    pub(crate) fn drained(&mut self, queues: &[String]) {
        self.queued_queues.retain(|q| !queues.contains(q));
        self.queued_any = !self.queued_queues.is_empty();
    }

    /// Records what admission in the result's transaction did: the queues that got work, or
    /// `None` when it was left to the admitter.
    pub(crate) fn set_admission(&mut self, admitted: Option<Vec<String>>) {
        self.admission_deferred = admitted.is_none();
        self.queued_queues = admitted.unwrap_or_default();
        self.queued_any = !self.queued_queues.is_empty();
    }
}

/// What an agent that reports a result asks to claim in the same transaction, after the
/// result's consequences and admission ([`crate::Store::complete_and_claim`]): its next tasks,
/// for the slot the ended attempt frees, without a transaction of their own.
#[derive(Debug, Clone)]
pub struct ClaimNext {
    /// The agent's queues.
    pub queues: Vec<String>,
    pub lease: std::time::Duration,
    /// Most instances to claim.
    pub max: usize,
}

/// Input for a new DAG run.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub dag_id: String,
    pub run_id: String,
    pub run_type: RunType,
    pub logical_date: DateTime<Utc>,
    pub data_interval: DataInterval,
    pub conf: serde_json::Value,
    pub params: serde_json::Value,
}

pub(crate) fn parse_state<T: std::str::FromStr<Err = String>>(
    s: &str,
) -> Result<T, crate::StoreError> {
    s.parse().map_err(crate::StoreError::Corrupt)
}
