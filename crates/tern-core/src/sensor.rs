//! Sensors: tasks that wait for a condition without holding a worker slot.
//!
//! A sensor task runs one *poke* per attempt: the agent checks the condition once. When it
//! holds, the task succeeds. When it does not, the attempt ends as *rescheduled*: the
//! instance becomes `up_for_reschedule`, frees its slot, and is queued again after the poke
//! interval, keeping its try number. The store enforces the sensor's `timeout`, counted from
//! the first poke of the try: past it the task fails without retries, or is skipped with
//! `soft_fail`.

use serde::{Deserialize, Serialize};

/// The fields every sensor shares, and what it checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorTask {
    #[serde(flatten)]
    pub check: SensorCheck,
    /// Time between pokes.
    #[serde(default = "default_poke_interval")]
    pub poke_interval_ms: u64,
    /// Longest wait, from the first poke of a try, before the sensor gives up.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// On timeout, mark the task `skipped` instead of `failed`.
    #[serde(default)]
    pub soft_fail: bool,
}

/// Default poke interval: one minute, as in Airflow.
pub const DEFAULT_POKE_INTERVAL_MS: u64 = 60_000;
/// Default sensor timeout: seven days, as in Airflow.
pub const DEFAULT_SENSOR_TIMEOUT_MS: u64 = 7 * 24 * 3_600_000;

fn default_poke_interval() -> u64 {
    DEFAULT_POKE_INTERVAL_MS
}

fn default_timeout() -> u64 {
    DEFAULT_SENSOR_TIMEOUT_MS
}

/// The condition a sensor waits for. Fields marked *templated* are rendered where it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "sensor", rename_all = "snake_case")]
pub enum SensorCheck {
    /// A query whose first cell is truthy (not NULL, 0, false, or empty text).
    Sql {
        conn: String,
        /// The query (templated).
        sql: String,
        #[serde(default)]
        parameters: Vec<serde_json::Value>,
    },
    /// An object, or any object under a prefix, exists in an object store.
    Object {
        conn: String,
        /// Object path inside the connection's bucket or folder (templated).
        path: String,
        /// Any object whose path starts with `path` counts.
        #[serde(default)]
        prefix: bool,
    },
    /// A file or folder exists on the machine running the sensor.
    File {
        /// Absolute path (templated).
        path: String,
    },
    /// An HTTP endpoint answers an expected status (and, optionally, a body containing text).
    Http {
        /// Absolute URL, or a path joined to the connection's URL (templated).
        url: String,
        #[serde(default)]
        conn: Option<String>,
        /// `GET` or `HEAD` (or any method the endpoint answers).
        method: String,
        #[serde(default)]
        headers: std::collections::BTreeMap<String, String>,
        /// Statuses that count as met; empty means any 2xx.
        #[serde(default)]
        expected_status: Vec<u16>,
        /// Text the body must contain (templated).
        #[serde(default)]
        response_contains: Option<String>,
    },
    /// A task (or a whole run) of another DAG, for the same logical date shifted by
    /// `execution_delta_ms`, reached one of `allowed_states`. The control plane answers the
    /// question when it hands out the poke.
    ExternalTask {
        external_dag_id: String,
        /// `None` waits for the external DAG's whole run.
        #[serde(default)]
        external_task_id: Option<String>,
        #[serde(default = "default_allowed")]
        allowed_states: Vec<String>,
        /// States that end the wait with a failure (not retried).
        #[serde(default = "default_failed")]
        failed_states: Vec<String>,
        /// Subtracted from this run's logical date to find the external run.
        #[serde(default)]
        execution_delta_ms: i64,
    },
    /// A time of day (`HH:MM` or `HH:MM:SS`, in the DAG's time zone) on the day the run's data
    /// interval ends.
    Time { target_time: String },
    /// The end of the run's data interval plus `delta_ms`.
    Delta { delta_ms: u64 },
}

fn default_allowed() -> Vec<String> {
    vec!["success".into()]
}

fn default_failed() -> Vec<String> {
    vec!["failed".into(), "upstream_failed".into()]
}

impl SensorCheck {
    /// The builtin that declares this sensor, also the task kind shown to users.
    pub fn kind_name(&self) -> &'static str {
        match self {
            SensorCheck::Sql { .. } => "sql_sensor",
            SensorCheck::Object { .. } => "object_sensor",
            SensorCheck::File { .. } => "file_sensor",
            SensorCheck::Http { .. } => "http_sensor",
            SensorCheck::ExternalTask { .. } => "external_task_sensor",
            SensorCheck::Time { .. } => "time_sensor",
            SensorCheck::Delta { .. } => "delta_sensor",
        }
    }

    /// The connections the check names.
    pub fn connection_names(&self) -> Vec<&str> {
        match self {
            SensorCheck::Sql { conn, .. } | SensorCheck::Object { conn, .. } => vec![conn],
            SensorCheck::Http { conn, .. } => conn.as_deref().into_iter().collect(),
            _ => Vec::new(),
        }
    }
}

/// Parses `HH:MM` or `HH:MM:SS`.
pub fn parse_time_of_day(s: &str) -> Result<chrono::NaiveTime, String> {
    chrono::NaiveTime::parse_from_str(s, "%H:%M:%S")
        .or_else(|_| chrono::NaiveTime::parse_from_str(s, "%H:%M"))
        .map_err(|_| format!("{s:?} is not a time of day: write \"HH:MM\" or \"HH:MM:SS\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TaskKind, TaskSpec};

    #[test]
    fn sensor_json_round_trips_with_defaults() {
        let t = TaskSpec::new(
            "wait",
            TaskKind::Sensor(SensorTask {
                check: SensorCheck::Object {
                    conn: "lake".into(),
                    path: "in/{{ ds }}/".into(),
                    prefix: true,
                },
                poke_interval_ms: 5_000,
                timeout_ms: 60_000,
                soft_fail: true,
            }),
        );
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["kind"], "sensor");
        assert_eq!(json["sensor"], "object");
        let back: TaskSpec = serde_json::from_value(json).unwrap();
        assert_eq!(back, t);
        let minimal: TaskSpec = serde_json::from_value(serde_json::json!({
            "task_id": "w", "line": 1, "kind": "sensor", "sensor": "delta", "delta_ms": 10,
            "trigger_rule": "all_success", "retries": 0, "retry_delay_ms": 0,
            "retry_exponential_backoff": false, "max_retry_delay_ms": null,
            "execution_timeout_ms": null, "queue": "default", "pool": "default_pool",
            "priority_weight": 1
        }))
        .unwrap();
        let TaskKind::Sensor(s) = minimal.kind else {
            panic!("not a sensor")
        };
        assert_eq!(s.poke_interval_ms, DEFAULT_POKE_INTERVAL_MS);
        assert_eq!(s.timeout_ms, DEFAULT_SENSOR_TIMEOUT_MS);
        assert!(!s.soft_fail);
    }

    #[test]
    fn time_of_day_forms() {
        assert_eq!(
            parse_time_of_day("07:30").unwrap(),
            chrono::NaiveTime::from_hms_opt(7, 30, 0).unwrap()
        );
        assert!(parse_time_of_day("7h").unwrap_err().contains("HH:MM"));
    }
}
