//! The messages between an agent and the control plane, in the agent's words: claim work, send
//! log chunks, heartbeat, report the result. The same types travel in-process (the local agent
//! of `standalone`) and as JSON over HTTPS (remote agents), so the two cannot drift apart.
//!
//! Compatibility rule: fields are only ever added, with `#[serde(default)]`; an agent and a
//! control plane one minor version apart understand each other.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tern_core::TaskSpec;

/// `major.minor` of this protocol (1.3 added [`Assignment::variables`], 1.4
/// [`Assignment::map_index`] and [`Assignment::map_values`]).
pub const PROTOCOL_VERSION: &str = "1.4";

/// A task instance handed to an agent: everything needed to run it with no other lookup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assignment {
    pub ti_id: i64,
    /// Token of this attempt; every later call about it quotes it (fencing).
    pub attempt: String,
    pub dag_id: String,
    pub run_id: String,
    pub task_id: String,
    pub try_number: u32,
    pub max_tries: u32,
    pub task: TaskSpec,
    pub context: RunContext,
    /// How long the lease lasts without a heartbeat.
    pub lease_ms: u64,
    /// Connections the task names that the control plane keeps (protocol 1.1). An agent's own
    /// connection of the same name wins.
    #[serde(default)]
    pub connections: BTreeMap<String, ConnectionSpec>,
    /// For an `external_task_sensor`: the state the control plane found for the task (or run)
    /// it waits on when it handed out this poke; `None` when there is no such run yet
    /// (protocol 1.2).
    #[serde(default)]
    pub external_state: Option<String>,
    /// The control plane's variables the task's templates name (`var.value.KEY`,
    /// `var.json.KEY`), in clear (protocol 1.3). An agent's own variable of the same key wins.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, VariableSpec>,
    /// For an instance of a mapped task: its index and the elements it was expanded with
    /// (key → element), which its templates see as `{{ map_index }}` and `{{ KEY }}`
    /// (protocol 1.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_index: Option<u32>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub map_values: serde_json::Map<String, serde_json::Value>,
}

/// A variable's value, and whether it is secret (then masked in every log line).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct VariableSpec {
    pub value: String,
    #[serde(default)]
    pub secret: bool,
}

impl std::fmt::Debug for VariableSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.secret {
            f.write_str("VariableSpec { secret }")
        } else {
            write!(f, "VariableSpec {{ value: {:?} }}", self.value)
        }
    }
}

/// The variable keys templates in `text` name: `var.value.KEY` and `var.json.KEY...`.
pub fn variable_keys(text: &str) -> std::collections::BTreeSet<String> {
    let mut keys = std::collections::BTreeSet::new();
    for prefix in ["var.value.", "var.json."] {
        let mut rest = text;
        while let Some(at) = rest.find(prefix) {
            rest = &rest[at + prefix.len()..];
            let key: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !key.is_empty() {
                keys.insert(key);
            }
        }
    }
    keys
}

/// A connection sent with an assignment: its URI and extra fields.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct ConnectionSpec {
    pub uri: String,
    #[serde(default)]
    pub extra: Map<String, Value>,
}

impl std::fmt::Debug for ConnectionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionSpec { .. }")
    }
}

/// Facts about the run that templates and the task environment expose.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunContext {
    pub logical_date: DateTime<Utc>,
    pub data_interval_start: DateTime<Utc>,
    pub data_interval_end: DateTime<Utc>,
    pub run_type: String,
    #[serde(default)]
    pub params: Map<String, Value>,
    #[serde(default)]
    pub conf: Value,
    /// Outputs published so far by tasks of the run: task id → key → value.
    #[serde(default)]
    pub outputs: BTreeMap<String, Map<String, Value>>,
    /// The DAG's IANA time zone (protocol 1.2).
    #[serde(default = "utc")]
    pub timezone: String,
}

fn utc() -> String {
    "UTC".to_string()
}

/// A piece of a task's log. `seq` counts chunks of one attempt from 0, so the receiver can
/// drop duplicates and see gaps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogChunk {
    pub ti_id: i64,
    pub attempt: String,
    pub seq: u64,
    pub text: String,
}

/// What the control plane answers to a heartbeat.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// False when the attempt is no longer current: the agent must stop the task.
    pub keep_running: bool,
}

/// The end of an attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Completion {
    pub ti_id: i64,
    pub attempt: String,
    pub success: bool,
    /// Whether another try could succeed; false for errors such as a template error.
    pub retryable: bool,
    pub exit_code: Option<i32>,
    /// Why the attempt failed, in a sentence for the task's note.
    pub reason: Option<String>,
    #[serde(default)]
    pub outputs: Map<String, Value>,
    /// A sensor's condition did not hold: poke again after this many milliseconds, on the
    /// same try (protocol 1.2). `success` is false and `reason` says what was seen.
    #[serde(default)]
    pub reschedule_after_ms: Option<u64>,
}

/// What the control plane answers to a completion.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct CompletionReply {
    /// False when the attempt was no longer current and the result changed nothing.
    pub accepted: bool,
}

/// An attempt an agent holds: running, or finished with its result not yet delivered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HeldAttempt {
    pub ti_id: i64,
    pub attempt: String,
}

/// What an agent says about itself when it (re)connects (protocol 1.1): the attempts it holds
/// and the names of its site-local connections (never their values).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    #[serde(default)]
    pub held: Vec<HeldAttempt>,
    #[serde(default)]
    pub connections: Vec<String>,
}

/// The answer to a [`Report`]: which of the held attempts are still current (their leases are
/// renewed). The agent stops the others and drops their spooled results.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReportReply {
    #[serde(default)]
    pub current: Vec<HeldAttempt>,
}
