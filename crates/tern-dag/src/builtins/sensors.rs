//! The sensor builtins: `sql_sensor`, `object_sensor`, `file_sensor`, `http_sensor`,
//! `external_task_sensor`, `time_sensor` and `delta_sensor`. Each declares a task that pokes
//! its condition every `poke_interval` without holding a slot in between, and gives up after
//! `timeout` (failed, or skipped with `soft_fail`).

use starlark::collections::SmallMap;
use starlark::environment::GlobalsBuilder;
use starlark::eval::Evaluator;
use starlark::starlark_module;
use starlark::values::Value;
use tern_core::sensor::{DEFAULT_POKE_INTERVAL_MS, DEFAULT_SENSOR_TIMEOUT_MS};
use tern_core::{SensorCheck, SensorTask, TaskKind, TaskState};

use super::{
    declare_task, http_method, required_string, suggest_or_list, to_bool, to_duration_ms, to_env,
    to_parameters, to_status_list, to_string, to_string_list, Kwargs,
};
use crate::draft::KindDraft;
use crate::values::TaskRef;

/// Fields every sensor accepts.
const SENSOR_FIELDS: &[&str] = &["poke_interval", "timeout", "soft_fail"];

/// `fields` plus the shared sensor fields.
fn with_sensor_fields(fields: &[&'static str]) -> Vec<&'static str> {
    fields.iter().chain(SENSOR_FIELDS).copied().collect()
}

/// A sensor task of `check` with the shared fields read from `args`.
fn sensor(args: &Kwargs, errs: &mut Vec<String>, check: SensorCheck) -> KindDraft {
    let poke_interval_ms = args
        .field("poke_interval", errs, to_duration_ms)
        .unwrap_or(DEFAULT_POKE_INTERVAL_MS);
    if poke_interval_ms == 0 {
        errs.push("`poke_interval` must be more than 0 s".into());
    }
    KindDraft::Ready(TaskKind::Sensor(SensorTask {
        check,
        poke_interval_ms,
        timeout_ms: args
            .field("timeout", errs, to_duration_ms)
            .unwrap_or(DEFAULT_SENSOR_TIMEOUT_MS),
        soft_fail: args.field("soft_fail", errs, to_bool).unwrap_or(false),
    }))
}

/// A list of task states, each checked.
fn to_states(field: &str, v: Value) -> Result<Vec<String>, String> {
    let states = to_string_list(field, v)?;
    for s in &states {
        if s.parse::<TaskState>().is_err() {
            let names: Vec<&str> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
            return Err(format!(
                "`{field}` holds unknown state `{s}`{}",
                suggest_or_list(s, &names, "use")
            ));
        }
    }
    Ok(states)
}

#[starlark_module]
pub(super) fn sensor_builtins(builder: &mut GlobalsBuilder) {
    /// Waits until a query's first cell is truthy.
    fn sql_sensor<'v>(
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<TaskRef> {
        let fields = with_sensor_fields(&["conn", "sql", "parameters"]);
        declare_task("sql_sensor()", &fields, kwargs, eval, |args, errs| {
            let check = SensorCheck::Sql {
                conn: required_string(args, "conn", "\"warehouse\"", errs),
                sql: required_string(
                    args,
                    "sql",
                    "\"SELECT COUNT(*) FROM loads WHERE day = '{{ ds }}'\"",
                    errs,
                ),
                parameters: args
                    .field("parameters", errs, to_parameters)
                    .unwrap_or_default(),
            };
            sensor(args, errs, check)
        })
    }

    /// Waits until an object (or, with `prefix = True`, any object under a prefix) exists.
    fn object_sensor<'v>(
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<TaskRef> {
        let fields = with_sensor_fields(&["conn", "path", "prefix"]);
        declare_task("object_sensor()", &fields, kwargs, eval, |args, errs| {
            let check = SensorCheck::Object {
                conn: required_string(args, "conn", "\"lake\"", errs),
                path: required_string(args, "path", "\"incoming/{{ ds }}/orders.csv\"", errs),
                prefix: args.field("prefix", errs, to_bool).unwrap_or(false),
            };
            sensor(args, errs, check)
        })
    }

    /// Waits until a file or folder exists where the sensor runs.
    fn file_sensor<'v>(
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<TaskRef> {
        let fields = with_sensor_fields(&["path"]);
        declare_task("file_sensor()", &fields, kwargs, eval, |args, errs| {
            let path = required_string(args, "path", "\"/data/in/{{ ds }}/done\"", errs);
            if !path.is_empty() && !path.starts_with('/') && !path.starts_with("{{") {
                errs.push(format!(
                    "`path` must be absolute (it is read on the machine running the sensor), got {path:?}"
                ));
            }
            sensor(args, errs, SensorCheck::File { path })
        })
    }

    /// Waits until an HTTP endpoint answers an expected status (and body text).
    fn http_sensor<'v>(
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<TaskRef> {
        let fields = with_sensor_fields(&[
            "url",
            "conn",
            "method",
            "headers",
            "expected_status",
            "response_contains",
        ]);
        declare_task("http_sensor()", &fields, kwargs, eval, |args, errs| {
            let method = http_method(args, errs);
            let check = SensorCheck::Http {
                url: required_string(args, "url", "\"https://api.example.com/ready\"", errs),
                conn: args.field("conn", errs, to_string),
                method,
                headers: args.field("headers", errs, to_env).unwrap_or_default(),
                expected_status: args
                    .field("expected_status", errs, to_status_list)
                    .unwrap_or_default(),
                response_contains: args.field("response_contains", errs, to_string),
            };
            sensor(args, errs, check)
        })
    }

    /// Waits until a task (or a whole run) of another DAG, for the same logical date, reached
    /// an allowed state.
    fn external_task_sensor<'v>(
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<TaskRef> {
        let fields = with_sensor_fields(&[
            "external_dag_id",
            "external_task_id",
            "allowed_states",
            "failed_states",
            "execution_delta",
        ]);
        declare_task(
            "external_task_sensor()",
            &fields,
            kwargs,
            eval,
            |args, errs| {
                let delta = args
                    .field("execution_delta", errs, to_duration_ms)
                    .unwrap_or(0);
                let check = SensorCheck::ExternalTask {
                    external_dag_id: required_string(
                        args,
                        "external_dag_id",
                        "\"load_orders\"",
                        errs,
                    ),
                    external_task_id: args.field("external_task_id", errs, to_string),
                    allowed_states: args
                        .field("allowed_states", errs, to_states)
                        .unwrap_or_else(|| vec!["success".into()]),
                    failed_states: args
                        .field("failed_states", errs, to_states)
                        .unwrap_or_else(|| vec!["failed".into(), "upstream_failed".into()]),
                    execution_delta_ms: i64::try_from(delta).unwrap_or(i64::MAX),
                };
                sensor(args, errs, check)
            },
        )
    }

    /// Waits until a time of day (in the DAG's time zone) on the day the data interval ends.
    fn time_sensor<'v>(
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<TaskRef> {
        let fields = with_sensor_fields(&["target_time"]);
        declare_task("time_sensor()", &fields, kwargs, eval, |args, errs| {
            let target_time = required_string(args, "target_time", "\"06:30\"", errs);
            if !target_time.is_empty() {
                if let Err(e) = tern_core::sensor::parse_time_of_day(&target_time) {
                    errs.push(format!("`target_time`: {e}"));
                }
            }
            sensor(args, errs, SensorCheck::Time { target_time })
        })
    }

    /// Waits until the end of the run's data interval plus `delta`.
    fn delta_sensor<'v>(
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<TaskRef> {
        let fields = with_sensor_fields(&["delta"]);
        declare_task("delta_sensor()", &fields, kwargs, eval, |args, errs| {
            let delta_ms = match args.field("delta", errs, to_duration_ms) {
                Some(d) => d,
                None => {
                    if args.get("delta").is_none() {
                        errs.push("`delta` is required, e.g. delta = \"2h\"".into());
                    }
                    0
                }
            };
            sensor(args, errs, SensorCheck::Delta { delta_ms })
        })
    }
}
