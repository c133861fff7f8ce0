//! Rendering templated task fields with Jinja (minijinja): the variables a run exposes and
//! the filters users expect. Undefined variables are errors, so a typo fails the task with a
//! message instead of rendering an empty string into a command.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use minijinja::{Environment, UndefinedBehavior, Value};
use tern_protocol::Assignment;

/// A template that could not be rendered, naming the field.
#[derive(Debug, thiserror::Error)]
#[error("template error in field {field}: {message}")]
pub struct TemplateError {
    pub field: String,
    pub message: String,
}

/// Renders the templated fields of one task attempt.
pub struct Renderer {
    env: Environment<'static>,
    /// The same, for shell commands: values that tern did not make are marked for escaping
    /// (see [`crate::shellsafe`]).
    shell_env: Environment<'static>,
    ctx: Value,
}

/// A value tern made itself (dates, ids of the DAG file): rendered as it is everywhere.
fn ours(s: String) -> Value {
    Value::from_safe_string(s)
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    // `{{ value | raw }}`: the author vouches for the value; it goes into a command as it is.
    env.add_filter("raw", |v: Value| Value::from_safe_string(v.to_string()));
    env
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}

impl Renderer {
    /// A renderer for attempt `a`; `conn` is what `{{ conn.NAME.… }}` reads (public fields of
    /// the agent's connections), `var` what `{{ var.value.KEY }}` and `{{ var.json.KEY }}` read
    /// (see [`crate::variables::Variables::template_value`]).
    pub fn new(a: &Assignment, conn: &serde_json::Value, var: &serde_json::Value) -> Renderer {
        let env = environment();
        let mut shell_env = environment();
        shell_env.set_formatter(|out, _state, value| {
            use minijinja::value::ValueKind;
            match value.kind() {
                ValueKind::Number | ValueKind::Bool | ValueKind::None => {
                    write!(out, "{value}").map_err(minijinja::Error::from)
                }
                _ if value.is_safe() => write!(out, "{value}").map_err(minijinja::Error::from),
                _ => out
                    .write_str(&crate::shellsafe::mark(&value.to_string()))
                    .map_err(minijinja::Error::from),
            }
        });
        let c = &a.context;
        let ld = c.logical_date;
        let ctx = minijinja::context! {
            ds => ours(ld.format("%Y-%m-%d").to_string()),
            ds_nodash => ours(ld.format("%Y%m%d").to_string()),
            ts => ours(iso(ld)),
            ts_nodash => ours(ld.format("%Y%m%dT%H%M%S").to_string()),
            logical_date => ours(iso(ld)),
            data_interval_start => ours(iso(c.data_interval_start)),
            data_interval_end => ours(iso(c.data_interval_end)),
            // A run id can be chosen by whoever triggers the run: not ours.
            run_id => a.run_id.clone(),
            run_type => ours(c.run_type.clone()),
            dag_id => ours(a.dag_id.clone()),
            task_id => ours(a.task_id.clone()),
            try_number => a.try_number,
            // -1 for a task that is not mapped, as in Airflow.
            map_index => a.map_index.map(i64::from).unwrap_or(-1),
            params => json_map(&c.params),
            conf => json(&c.conf),
            conn => json(conn),
            // Variables come from whoever set them: not ours (escaped in shell commands).
            var => json(var),
            outputs => Value::from(
                c.outputs
                    .iter()
                    .map(|(task, m)| (task.clone(), json_map(m)))
                    .collect::<BTreeMap<String, Value>>(),
            ),
        };
        // A mapped instance's elements, by key (names the loader keeps apart from the above);
        // they come from lists and outputs: not ours (escaped in shell commands).
        let ctx = if a.map_values.is_empty() {
            ctx
        } else {
            minijinja::context! { ..ctx, ..json_map(&a.map_values) }
        };
        Renderer {
            env,
            shell_env,
            ctx,
        }
    }

    /// Renders a shell command: every value that tern did not make itself (params, conf,
    /// outputs, the run id, connection fields) arrives escaped for where it stands, so it is
    /// text, never code, unless written `{{ value | raw }}`.
    pub fn render_shell(&self, field: &str, source: &str) -> Result<String, TemplateError> {
        if !tern_core::spec::may_hold_templates(source) {
            return Ok(source.to_string());
        }
        self.shell_env
            .render_str(source, &self.ctx)
            .map(|marked| crate::shellsafe::escape_marked(&marked))
            .map_err(|e| TemplateError {
                field: field.to_string(),
                message: describe(&e),
            })
    }

    /// Renders `source`; a plain string without `{{`/`{%` is returned as is.
    pub fn render(&self, field: &str, source: &str) -> Result<String, TemplateError> {
        if !tern_core::spec::may_hold_templates(source) {
            return Ok(source.to_string());
        }
        self.env
            .render_str(source, &self.ctx)
            .map_err(|e| TemplateError {
                field: field.to_string(),
                message: describe(&e),
            })
    }
}

/// Converts JSON to a template value explicitly: going through serde would expose
/// serde_json's internal number representation when `arbitrary_precision` is enabled anywhere in
/// the build.
fn json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.clone()),
        serde_json::Value::Array(a) => Value::from(a.iter().map(json).collect::<Vec<_>>()),
        serde_json::Value::Object(m) => json_map(m),
    }
}

fn json_map(m: &serde_json::Map<String, serde_json::Value>) -> Value {
    Value::from(
        m.iter()
            .map(|(k, v)| (k.clone(), json(v)))
            .collect::<BTreeMap<String, Value>>(),
    )
}

fn describe(e: &minijinja::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tern_core::{TaskKind, TaskSpec};
    use tern_protocol::RunContext;

    fn assignment() -> Assignment {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let mut outputs = std::collections::BTreeMap::new();
        outputs.insert(
            "extract".to_string(),
            json!({"rows": 42}).as_object().unwrap().clone(),
        );
        Assignment {
            ti_id: 1,
            attempt: "a".into(),
            dag_id: "etl".into(),
            run_id: "scheduled__2026-01-02".into(),
            task_id: "load".into(),
            try_number: 2,
            max_tries: 3,
            task: TaskSpec::new("load", TaskKind::Empty),
            context: RunContext {
                logical_date: t("2026-01-02T00:00:00Z"),
                data_interval_start: t("2026-01-02T00:00:00Z"),
                data_interval_end: t("2026-01-03T00:00:00Z"),
                run_type: "scheduled".into(),
                params: json!({"country": "Spain", "limit": 5})
                    .as_object()
                    .unwrap()
                    .clone(),
                conf: json!({"note": "x"}),
                outputs,
                timezone: "UTC".into(),
            },
            lease_ms: 30_000,
            connections: Default::default(),
            external_state: None,
            variables: Default::default(),
            map_index: None,
            map_values: Default::default(),
        }
    }

    #[test]
    fn renders_the_documented_variables() {
        let r = Renderer::new(
            &assignment(),
            &serde_json::json!({}),
            &serde_json::json!({"value": {}, "json": {}}),
        );
        let cases = [
            ("{{ ds }}", "2026-01-02"),
            ("{{ ds_nodash }}", "20260102"),
            ("{{ ts }}", "2026-01-02T00:00:00+00:00"),
            ("{{ data_interval_end }}", "2026-01-03T00:00:00+00:00"),
            (
                "{{ dag_id }}.{{ task_id }} try {{ try_number }}",
                "etl.load try 2",
            ),
            ("{{ params.country | upper }}", "SPAIN"),
            ("{{ params.limit * 2 }}", "10"),
            ("{{ outputs.extract.rows }}", "42"),
            ("{{ conf.note }}", "x"),
            ("{{ params.country.replace('S', 'Z') }}", "Zpain"),
            (
                "{{ params | tojson }}",
                "{\"country\": \"Spain\", \"limit\": 5}",
            ),
            ("no template", "no template"),
        ];
        for (src, want) in cases {
            assert_eq!(r.render("cmd", src).unwrap(), want, "{src}");
        }
    }

    #[test]
    fn undefined_names_are_errors_naming_the_field() {
        let r = Renderer::new(
            &assignment(),
            &serde_json::json!({}),
            &serde_json::json!({"value": {}, "json": {}}),
        );
        let e = r.render("cmd", "echo {{ outputs.nope.rows }}").unwrap_err();
        assert_eq!(e.field, "cmd");
        assert!(e.to_string().contains("template error in field cmd"), "{e}");
        assert!(r.render("cmd", "{{ ds ").is_err());
    }
}
